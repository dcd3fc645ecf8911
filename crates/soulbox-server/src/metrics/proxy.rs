//! Counts the data plane: requests by the status class of their answer, body bytes each
//! way. Bytes of upgraded connections (WebSockets, tunnels) after the upgrade are not counted.

use crate::AppState;
use axum::body::Body;
use axum::body::Bytes;
use axum::http::Request;
use axum::response::Response;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use std::pin::Pin;
use std::task::{Context, Poll};

/// [`crate::proxy::forward`], counted.
pub async fn forward(st: &AppState, target: crate::proxy::Target, req: Request<Body>) -> Response {
    let f = &st.metrics.families;
    let to = f
        .proxy_bytes
        .get_or_create_owned(&[("direction", "to_sandbox")]);
    let from = f
        .proxy_bytes
        .get_or_create_owned(&[("direction", "from_sandbox")]);
    let req = req.map(|b| counted(b, to));
    let resp = crate::proxy::forward(st, target, req).await;
    let class = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    f.proxy_requests.get_or_create(&[("code", class)]).inc();
    resp.map(|b| counted(b, from))
}

fn counted(body: Body, bytes: Counter) -> Body {
    Body::new(Counted { inner: body, bytes })
}

/// A body that counts its data as it passes, and tells its length and end as the body it
/// wraps does (a wrapper that did not would turn a sized body into a chunked one).
struct Counted {
    inner: Body,
    bytes: Counter,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let p = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &p {
            if let Some(d) = f.data_ref() {
                self.bytes.inc_by(d.len() as u64);
            }
        }
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
