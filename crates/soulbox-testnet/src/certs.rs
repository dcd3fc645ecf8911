//! A throw-away CA, made fresh at every `up`, and one server certificate
//! for every name and address the testnet serves.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{dns, netns};

/// Writes `dir/ca.pem` (the CA certificate only; its key never leaves this
/// process) and returns the TLS config for the servers.
pub fn make(dir: &Path, v6: bool) -> Result<Arc<ServerConfig>> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "SoulBox testnet CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut sans: Vec<String> = dns::RECORDS.iter().map(|(n, _)| n.to_string()).collect();
    sans.push(dns::WILD.0.to_string());
    sans.push(format!("*.{}", dns::WILD.0));
    sans.push(dns::V6ONLY.to_string());
    // IP strings become IP SANs (rcgen parses them).
    sans.extend(netns::server_ips(v6).iter().map(|ip| ip.to_string()));
    let mut leaf = CertificateParams::new(sans)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "SoulBox testnet server");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;

    let ca_path = dir.join("ca.pem");
    fs::write(&ca_path, ca_cert.pem()).with_context(|| format!("writing {}", ca_path.display()))?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
