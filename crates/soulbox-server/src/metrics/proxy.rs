//! Counts the data plane: requests by the status class of their answer, body bytes each
//! way. Bytes of upgraded connections (WebSockets, tunnels) after the upgrade are not counted.

use crate::AppState;
use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;

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
    Body::new(body.map_frame(move |frame| {
        if let Some(d) = frame.data_ref() {
            bytes.inc_by(d.len() as u64);
        }
        frame
    }))
}
