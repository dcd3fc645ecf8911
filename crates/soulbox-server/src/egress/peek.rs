//! What a connection names before the proxy connects it anywhere: the server name of a TLS
//! ClientHello, or the `Host` of the first HTTP request. The bytes read are kept, to be sent
//! on unchanged (or replayed into the proxy's own TLS server).

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Most bytes read while looking for the name (a ClientHello with post-quantum key shares
/// is ~1.8 KiB; a request head with cookies can be several).
pub const MAX_PEEK: usize = 32 << 10;

#[derive(Debug, PartialEq, Eq)]
pub struct Hello {
    pub bytes: Vec<u8>,
    pub tls: bool,
    /// Lower case, without a port or a trailing dot; `None`: it names nothing.
    pub name: Option<String>,
}

fn clean(name: &str) -> Option<String> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!n.is_empty()).then_some(n)
}

/// The host of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_of(v: &str) -> Option<String> {
    let v = v.trim();
    if let Some(rest) = v.strip_prefix('[') {
        return clean(rest.split(']').next()?);
    }
    clean(v.rsplit_once(':').map_or(v, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            v
        }
    }))
}

/// Reads from `r` until the name is known or cannot be: end of stream, a complete request
/// head or ClientHello without one, or [`MAX_PEEK`] bytes.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Hello> {
    let mut bytes = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 8192];
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Hello {
                tls: bytes.first() == Some(&0x16),
                bytes,
                name: None,
            });
        }
        bytes.extend_from_slice(&chunk[..n]);
        if bytes[0] == 0x16 {
            // TLS: the record layer may split the ClientHello; rustls reassembles it.
            let mut rd: &[u8] = &chunk[..n];
            if acceptor.read_tls(&mut rd).is_err() {
                return Ok(Hello {
                    bytes,
                    tls: true,
                    name: None,
                });
            }
            match acceptor.accept() {
                Ok(Some(a)) => {
                    let name = a.client_hello().server_name().and_then(clean);
                    return Ok(Hello {
                        bytes,
                        tls: true,
                        name,
                    });
                }
                Ok(None) => {}
                Err(_) => {
                    return Ok(Hello {
                        bytes,
                        tls: true,
                        name: None,
                    })
                }
            }
        } else {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&bytes) {
                Ok(httparse::Status::Complete(_)) => {
                    let name = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("host"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(host_of);
                    return Ok(Hello {
                        bytes,
                        tls: false,
                        name,
                    });
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => {
                    return Ok(Hello {
                        bytes,
                        tls: false,
                        name: None,
                    })
                }
            }
        }
        if bytes.len() >= MAX_PEEK {
            return Ok(Hello {
                tls: bytes[0] == 0x16,
                bytes,
                name: None,
            });
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct Replay<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_come_from_the_host_header_and_the_client_hello() {
        let req = b"GET / HTTP/1.1\r\nHost: Allowed.Test:8080\r\nX: y\r\n\r\nbody";
        let h = read_hello(&mut &req[..]).await.unwrap();
        assert_eq!(h.name.as_deref(), Some("allowed.test"));
        assert!(!h.tls && h.bytes == req);
        assert_eq!(host_of("[2001:db8::1]:443").as_deref(), Some("2001:db8::1"));
        assert_eq!(host_of("a.test.").as_deref(), Some("a.test"));
        // No Host at all, or not HTTP: no name.
        let h = read_hello(&mut &b"GET / HTTP/1.0\r\n\r\n"[..])
            .await
            .unwrap();
        assert_eq!(h.name, None);
        let h = read_hello(&mut &b"\x00\x01garbage"[..]).await.unwrap();
        assert_eq!(h.name, None);

        // A real ClientHello, from rustls's client, read in small pieces.
        let mut c = rustls::ClientConnection::new(
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
            rustls::pki_types::ServerName::try_from("api.test").unwrap(),
        )
        .unwrap();
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        let (mut w, mut r) = tokio::io::duplex(64);
        let sent = hello.clone();
        tokio::spawn(async move {
            for piece in sent.chunks(7) {
                tokio::io::AsyncWriteExt::write_all(&mut w, piece)
                    .await
                    .unwrap();
            }
        });
        let h = read_hello(&mut r).await.unwrap();
        assert!(h.tls);
        assert_eq!(h.name.as_deref(), Some("api.test"));
        assert_eq!(h.bytes, hello);
        // Replayed, the bytes come back in order, then the stream's own.
        let mut rp = Replay::new(b"abc".to_vec(), &b"def"[..]);
        let mut all = String::new();
        rp.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "abcdef");
    }

    use std::sync::Arc;
}
