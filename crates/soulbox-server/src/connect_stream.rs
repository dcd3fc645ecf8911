//! A Connect server stream (a command's output, a directory watch) whose sandbox goes away
//! mid-response. The agent's connection just drops, which older SDKs report as a raw body
//! read error. E2B's proxy answers a gone sandbox with "unavailable … was not found", so the
//! stream is ended the same way: with a Connect end-of-stream frame carrying that error,
//! which every SDK maps to its timeout error ("the sandbox was killed or reached its timeout").

use crate::AppState;
use axum::body::Body;
use bytes::{Buf, Bytes};
use futures::StreamExt;
use http_body_util::BodyExt;

/// Whether a response is a Connect streaming response (`application/connect+json|proto`).
pub fn is_connect_stream(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/connect+"))
}

/// Passes `body` through; if it fails between two envelopes, appends the end-of-stream
/// error instead of failing the client's connection. A failure inside an envelope cannot be
/// mended (the client has half a message) and is passed on as a failure.
pub fn end_cleanly(st: AppState, sandbox_id: String, body: hyper::body::Incoming) -> Body {
    let mut framing = Framing::default();
    let mut finished = false;
    let st = std::sync::Arc::new((st, sandbox_id));
    let frames = body.into_data_stream().flat_map(move |chunk| {
        let st = st.clone();
        let out: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match chunk {
            _ if finished => futures::stream::empty().boxed(),
            Ok(data) => {
                framing.advance(&data);
                futures::stream::iter([Ok(data)]).boxed()
            }
            Err(e) if framing.at_boundary() && !framing.ended => {
                finished = true;
                tracing::debug!(sandbox_id = %st.1, "sandbox stream cut: {e}");
                futures::stream::once(async move { Ok(end_frame(&st.0, &st.1).await) }).boxed()
            }
            Err(e) => futures::stream::iter([Err(std::io::Error::other(e))]).boxed(),
        };
        out
    });
    Body::from_stream(frames)
}

/// The end-of-stream envelope (flag 0x02) for a sandbox that went away: "was not found" when
/// it was killed or timed out (its record says so), "connection lost" otherwise.
async fn end_frame(st: &AppState, id: &str) -> Bytes {
    let gone = !matches!(st.store.live_sandbox(id).await, Ok(Some(r)) if r.state != "killed");
    let message = if gone {
        format!("The sandbox {id} was not found")
    } else {
        format!("The connection to the sandbox {id} was lost")
    };
    envelope(
        0x02,
        serde_json::json!({"error": {"code": "unavailable", "message": message}})
            .to_string()
            .as_bytes(),
    )
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(flags);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.into()
}

/// Tracks Connect envelopes (1 flag byte, 4-byte big-endian length, payload) across chunks.
#[derive(Default)]
struct Framing {
    /// Bytes of the current envelope's 5-byte prefix seen so far.
    prefix: Vec<u8>,
    /// Payload bytes of the current envelope still to come.
    remaining: usize,
    /// The upstream already sent its own end-of-stream envelope.
    ended: bool,
}

impl Framing {
    fn advance(&mut self, mut data: &[u8]) {
        while data.has_remaining() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data.advance(n);
                continue;
            }
            let n = (5 - self.prefix.len()).min(data.len());
            self.prefix.extend_from_slice(&data[..n]);
            data.advance(n);
            if self.prefix.len() == 5 {
                self.ended |= self.prefix[0] & 0x02 != 0;
                self.remaining = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                self.prefix.clear();
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.prefix.is_empty() && self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_envelopes_split_anywhere() {
        let mut stream = envelope(0, b"{\"a\":1}").to_vec();
        stream.extend_from_slice(&envelope(0, b"{}"));
        for split in 0..stream.len() {
            let mut f = Framing::default();
            f.advance(&stream[..split]);
            let boundary = split == 0 || split == 12 || split == stream.len();
            assert_eq!(f.at_boundary(), boundary, "split at {split}");
            f.advance(&stream[split..]);
            assert!(f.at_boundary() && !f.ended);
        }
        let mut f = Framing::default();
        f.advance(&envelope(0x02, b"{}"));
        assert!(f.ended);
    }
}
