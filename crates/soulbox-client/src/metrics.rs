//! A sandbox's resource use: the samples the server keeps (`get_metrics()`), the latest of
//! several at once, and the live stream (Server-Sent Events).

use crate::client::{parse, Client};
use crate::error::{Error, Result};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::Pin;

/// One sample of a sandbox (E2B's `SandboxMetric`, with SoulBox's network counters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SandboxMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    /// Percent of the sandbox's CPU allotment used over the sample's interval.
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
    /// Bytes received and sent since the sandbox started.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

#[derive(Deserialize)]
struct Batch {
    sandboxes: BTreeMap<String, SandboxMetric>,
}

/// Most ids the server takes in one batch request.
const BATCH: usize = 100;

impl Client {
    /// The samples kept of a sandbox between `start` and `end` (Unix seconds), oldest first.
    pub async fn metrics(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>> {
        let mut q = vec![];
        if let Some(s) = start {
            q.push(("start", s.to_string()));
        }
        if let Some(e) = end {
            q.push(("end", e.to_string()));
        }
        let url = self.endpoint(&format!("/sandboxes/{id}/metrics"));
        parse(&self.send(self.inner.http.get(url).query(&q)).await?)
    }

    /// The latest sample of each sandbox named (those not found are left out).
    pub async fn metrics_of(&self, ids: &[String]) -> Result<BTreeMap<String, SandboxMetric>> {
        let mut all = BTreeMap::new();
        for chunk in ids.chunks(BATCH) {
            let url = self.endpoint("/sandboxes/metrics");
            let req = self
                .inner
                .http
                .get(url)
                .query(&[("sandbox_ids", chunk.join(","))]);
            let b: Batch = parse(&self.send(req).await?)?;
            all.extend(b.sandboxes);
        }
        Ok(all)
    }

    /// Follows a sandbox's samples as they are taken; the stream ends when the sandbox is
    /// gone (or the connection is).
    pub async fn metrics_stream(&self, id: &str) -> Result<MetricStream> {
        let url = self.endpoint(&format!("/sandboxes/{id}/metrics/stream"));
        let resp = self
            .inner
            .http
            .get(url)
            .header("X-API-KEY", self.api_key())
            .header("Accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.bytes().await?;
            return Err(Error::from_status(status, &body));
        }
        Ok(MetricStream {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            ended: false,
        })
    }
}

/// The live samples of one sandbox: [`MetricStream::next`] until `None`.
pub struct MetricStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    ended: bool,
}

impl MetricStream {
    /// The next sample; `None` once the sandbox is gone or the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<SandboxMetric>> {
        loop {
            if self.ended {
                return None;
            }
            while let Some((event, data)) = next_event(&mut self.buf) {
                match event.as_str() {
                    "metric" => {
                        return Some(
                            serde_json::from_str(&data)
                                .map_err(|e| Error::Protocol(format!("metric event: {e}: {data}"))),
                        )
                    }
                    "end" => {
                        self.ended = true;
                        return None;
                    }
                    _ => {}
                }
            }
            match self.body.next().await {
                Some(Ok(b)) => self.buf.extend_from_slice(&b),
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(Error::Http(e)));
                }
                None => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }
}

/// Takes one whole event (up to a blank line) off `buf`: its name and data. Comments
/// (keep-alives) make events with no name and are skipped by the caller.
fn next_event(buf: &mut Vec<u8>) -> Option<(String, String)> {
    let text = std::str::from_utf8(buf).ok()?;
    let end = text.find("\n\n")?;
    let (mut event, mut data) = (String::new(), Vec::new());
    for line in text[..end].lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    buf.drain(..end + 2);
    Some((event, data.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines() {
        let mut buf =
            b": keep-alive\n\nevent: metric\ndata: {\"cpuUsedPct\":5}\n\nevent: en".to_vec();
        assert_eq!(next_event(&mut buf), Some((String::new(), String::new())));
        assert_eq!(
            next_event(&mut buf),
            Some(("metric".into(), "{\"cpuUsedPct\":5}".into()))
        );
        assert_eq!(next_event(&mut buf), None);
        buf.extend_from_slice(b"d\ndata: {}\n\n");
        assert_eq!(next_event(&mut buf), Some(("end".into(), "{}".into())));
    }
}
