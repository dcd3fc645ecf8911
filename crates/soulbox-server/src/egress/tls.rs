//! TLS for the egress proxy: each sandbox's own CA (its certificate is put in the sandbox's
//! trust store, its key never leaves the host), the certificates the proxy shows for hosts
//! with header rules, and the client configuration that verifies the real servers against
//! the host's trust store (plus the operator's extra CAs).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where the CA goes in a sandbox (beside the system bundle it is appended to).
pub const SANDBOX_CA_PATH: &str = "/etc/ssl/certs/soulbox-egress-ca.pem";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What is stored of a CA (sealed): its key and certificate, PEM.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredCa {
    pub key_pem: String,
    pub cert_pem: String,
}

pub struct SandboxCa {
    cert_pem: String,
    ca_der: CertificateDer<'static>,
    key: KeyPair,
    issuer: rcgen::Certificate,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxCa")
    }
}

fn ca_params(sandbox_id: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "SoulBox");
    dn.push(
        DnType::CommonName,
        format!("SoulBox egress CA of sandbox {sandbox_id}"),
    );
    p.distinguished_name = dn;
    // It signs leaf certificates only.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

impl SandboxCa {
    pub fn generate(sandbox_id: &str) -> Result<SandboxCa, rcgen::Error> {
        let key = KeyPair::generate()?;
        let issuer = ca_params(sandbox_id)?.self_signed(&key)?;
        Ok(SandboxCa {
            cert_pem: issuer.pem(),
            ca_der: issuer.der().clone(),
            key,
            issuer,
            leaves: Mutex::default(),
        })
    }

    /// The CA as stored: the certificate the sandbox trusts is the stored one; leaves are
    /// signed by the same name and key, so they chain to it.
    pub fn from_stored(sandbox_id: &str, s: &StoredCa) -> Result<SandboxCa, rcgen::Error> {
        let key = KeyPair::from_pem(&s.key_pem)?;
        let issuer = ca_params(sandbox_id)?.self_signed(&key)?;
        let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(s.cert_pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok(SandboxCa {
            cert_pem: s.cert_pem.clone(),
            ca_der,
            key,
            issuer,
            leaves: Mutex::default(),
        })
    }

    pub fn stored(&self) -> StoredCa {
        StoredCa {
            key_pem: self.key.serialize_pem(),
            cert_pem: self.cert_pem.clone(),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate shown to the sandbox for `name` (made once per name).
    fn leaf(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(k) = self.leaves.lock().ok()?.get(name) {
            return Some(k.clone());
        }
        let make = || -> Result<CertifiedKey, Box<dyn std::error::Error>> {
            let mut p = CertificateParams::new(vec![name.to_string()])?;
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, name);
            p.is_ca = IsCa::NoCa;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.not_before = rcgen::date_time_ymd(2024, 1, 1);
            p.not_after = rcgen::date_time_ymd(2124, 1, 1);
            let key = KeyPair::generate()?;
            let cert = p.signed_by(&key, &self.issuer, &self.key)?;
            let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
            Ok(CertifiedKey::new(
                vec![cert.der().clone(), self.ca_der.clone()],
                signer,
            ))
        };
        match make() {
            Ok(k) => {
                let k = Arc::new(k);
                let mut leaves = self.leaves.lock().ok()?;
                // Bounded: a sandbox naming endless hosts does not grow it without end.
                if leaves.len() >= 1024 {
                    leaves.clear();
                }
                leaves.insert(name.to_string(), k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::warn!("making a certificate for {name}: {e}");
                None
            }
        }
    }

    /// The TLS server configuration the proxy answers the sandbox with for `name`.
    pub fn server_config(self: &Arc<Self>, name: &str) -> Option<Arc<rustls::ServerConfig>> {
        let leaf = self.leaf(name)?;
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .ok()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(leaf)));
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Arc::new(c))
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The client side: the host's trust store and `extra` PEM files.
pub fn upstream_config(extra: &[std::path::PathBuf]) -> std::io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("host trust store: {e}");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    let mut extra_added = 0;
    for f in extra {
        let certs = read_pem_certs(f)?;
        extra_added += roots.add_parsable_certificates(certs).0;
    }
    tracing::info!(
        host = added,
        extra = extra_added,
        "egress proxy trust store"
    );
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

fn read_pem_certs(f: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(f)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", f.display())))?
        .collect();
    let certs = certs.map_err(|e| std::io::Error::other(format!("{}: {e}", f.display())))?;
    if certs.is_empty() {
        return Err(std::io::Error::other(format!(
            "{}: no certificate in it",
            f.display()
        )));
    }
    Ok(certs)
}

/// The shell script that puts `pem` in a sandbox's trust stores: its own file, the system
/// bundle (made if the image has none) and the directory `update-ca-certificates` reads.
pub fn install_script(pem: &str) -> String {
    format!(
        r#"set -e
umask 022
mkdir -p /etc/ssl/certs /usr/local/share/ca-certificates
cat > {SANDBOX_CA_PATH} <<'SOULBOX_CA'
{pem}SOULBOX_CA
cp {SANDBOX_CA_PATH} /usr/local/share/ca-certificates/soulbox-egress-ca.crt
b=/etc/ssl/certs/ca-certificates.crt
grep -qF "$(sed -n 2p {SANDBOX_CA_PATH})" "$b" 2>/dev/null || cat {SANDBOX_CA_PATH} >> "$b"
if [ -d /usr/lib/ssl ] && [ ! -e /usr/lib/ssl/cert.pem ]; then ln -s "$b" /usr/lib/ssl/cert.pem; fi
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_ca_signs_leaves_that_chain_to_the_certificate_given_out() {
        let ca = SandboxCa::generate("sbx1").unwrap();
        let again = Arc::new(SandboxCa::from_stored("sbx1", &ca.stored()).unwrap());
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let leaf = again.leaf("api.test").unwrap();
        // Verify the leaf against a trust store holding only the first CA's certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &name, &[], now)
            .expect("the leaf chains to the stored CA");
        let other = rustls::pki_types::ServerName::try_from("other.test").unwrap();
        assert!(verifier
            .verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &other, &[], now)
            .is_err());
        // Another sandbox's CA does not vouch for it.
        let foreign = SandboxCa::generate("sbx2").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(foreign.ca_der.clone()).unwrap();
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        assert!(v
            .verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &name, &[], now)
            .is_err());
        assert!(install_script(ca.cert_pem()).contains("BEGIN CERTIFICATE"));
    }
}
