//! Connect protocol framing and errors (spec §3.1).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Content type of streaming requests and responses; the Python SDK compares it exactly.
pub const STREAM_CONTENT_TYPE: &str = "application/connect+json";
pub const UNARY_CONTENT_TYPE: &str = "application/json";

pub const FLAG_MESSAGE: u8 = 0x00;
pub const FLAG_COMPRESSED: u8 = 0x01;
pub const FLAG_END_STREAM: u8 = 0x02;

/// Connect error codes with their HTTP status for unary responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }
}

/// A Connect error as it appears in a unary error body or an end-of-stream frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Body of a unary error response.
    pub fn unary_body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "code": self.code, "message": self.message, "details": []
        }))
        .unwrap_or_default()
    }
}

/// Frames one JSON message.
pub fn encode_message<T: Serialize>(msg: &T) -> Bytes {
    let payload = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    frame(FLAG_MESSAGE, &payload)
}

/// Frames the end of a stream: `{}` on success, the error otherwise.
pub fn encode_end(error: Option<&ConnectError>) -> Bytes {
    let payload = match error {
        None => b"{}".to_vec(),
        Some(e) => serde_json::to_vec(&serde_json::json!({ "error": e })).unwrap_or_default(),
    };
    frame(FLAG_END_STREAM, &payload)
}

fn frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("envelope of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("compressed envelopes are not supported")]
    Compressed,
}

/// Incremental envelope decoder for streamed request bodies.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    max: usize,
}

impl Decoder {
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete envelope, if one has arrived.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge(len));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(FrameError::Compressed);
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, payload }))
    }

    /// Bytes received that do not yet form an envelope.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Parses `Connect-Timeout-Ms` leniently (old SDKs send `"500.0"`).
pub fn parse_timeout_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    v.parse::<u64>().ok().or_else(|| {
        v.parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let a = encode_message(&serde_json::json!({"a": 1}));
        let b = encode_end(Some(&ConnectError::new(Code::NotFound, "x")));
        let all = [a.as_ref(), b.as_ref()].concat();
        let mut d = Decoder::new(1 << 20);
        let mut got = vec![];
        for chunk in all.chunks(3) {
            d.push(chunk);
            while let Some(e) = d.next_envelope().unwrap() {
                got.push(e);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].flags, FLAG_MESSAGE);
        assert_eq!(&got[0].payload[..], br#"{"a":1}"#);
        assert_eq!(got[1].flags, FLAG_END_STREAM);
        let v: serde_json::Value = serde_json::from_slice(&got[1].payload).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused() {
        let mut d = Decoder::new(4);
        d.push(&[0, 0, 0, 0, 9]);
        assert_eq!(d.next_envelope(), Err(FrameError::TooLarge(9)));
        let mut d = Decoder::new(100);
        d.push(&[1, 0, 0, 0, 1, b'x']);
        assert_eq!(d.next_envelope(), Err(FrameError::Compressed));
    }

    #[test]
    fn timeout_header_is_lenient() {
        assert_eq!(parse_timeout_ms("1500"), Some(1500));
        assert_eq!(parse_timeout_ms("500.0"), Some(500));
        assert_eq!(parse_timeout_ms("-1"), None);
        assert_eq!(parse_timeout_ms("abc"), None);
    }

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(Code::NotFound.http_status(), 404);
        assert_eq!(Code::Unauthenticated.http_status(), 401);
        assert_eq!(
            serde_json::to_string(&Code::InvalidArgument).unwrap(),
            "\"invalid_argument\""
        );
    }
}
