//! One sandbox, and the agent's protocol under it: Connect unary calls and server streams,
//! sent through the server's proxy with the sandbox's routing headers and access token.

use crate::client::Client;
use crate::commands::Commands;
use crate::error::{Error, Result};
use crate::files::Files;
use crate::pty::Pty;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use soulbox_protocol::connect::{self, Decoder, FLAG_END_STREAM};
use std::pin::Pin;

/// Largest message accepted from a stream (the agent sends output in 32 KiB chunks).
const MAX_MESSAGE: usize = 16 << 20;

/// A running sandbox. Cheap to clone; every clone talks to the same sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub(crate) client: Client,
    id: String,
    template: String,
    token: Option<String>,
    user: Option<String>,
}

/// Messages of a server stream, decoded as they arrive.
pub(crate) type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

impl Sandbox {
    pub(crate) fn new(
        client: Client,
        id: String,
        template: String,
        token: Option<String>,
    ) -> Sandbox {
        Sandbox {
            client,
            id,
            template,
            token,
            user: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The same sandbox, acting as another user (`root`, or any user of the template) for
    /// commands and files; the default is the template's (`user`).
    pub fn as_user(&self, user: impl Into<String>) -> Sandbox {
        Sandbox {
            user: Some(user.into()),
            ..self.clone()
        }
    }

    pub fn commands(&self) -> Commands<'_> {
        Commands::new(self)
    }

    pub fn files(&self) -> Files<'_> {
        Files::new(self)
    }

    pub fn pty(&self) -> Pty<'_> {
        Pty::new(self)
    }

    pub async fn kill(&self) -> Result<()> {
        self.client.kill(&self.id).await
    }

    pub async fn set_timeout(&self, seconds: u64) -> Result<()> {
        self.client.set_timeout(&self.id, seconds).await
    }

    pub async fn pause(&self) -> Result<()> {
        self.client.pause(&self.id).await
    }

    /// A request to the sandbox's agent through the proxy.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        use base64::Engine as _;
        let mut b = self
            .client
            .inner
            .http
            .request(method, format!("{}{path}", self.client.inner.url))
            .header("E2b-Sandbox-Id", &self.id)
            .header("E2b-Sandbox-Port", soulbox_protocol::ENVD_PORT.to_string());
        if let Some(t) = &self.token {
            b = b.header("X-Access-Token", t);
        }
        if let Some(u) = &self.user {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{u}:"));
            b = b.header("Authorization", format!("Basic {basic}"));
        }
        b
    }

    /// Sends a data-plane request; non-2xx answers become errors.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| self.client.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        // Connect errors carry a string code; HTTP errors of the proxy and /files a number.
        Err(if v["code"].is_string() {
            Error::from_connect(&v)
        } else {
            Error::from_status(status, &body)
        })
    }

    /// A unary Connect call (`/service.Service/Method` with a JSON body).
    pub(crate) async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        msg: &Req,
    ) -> Result<Resp> {
        let req = self
            .request(reqwest::Method::POST, &format!("/{method}"))
            .header("Content-Type", connect::UNARY_CONTENT_TYPE)
            .json(msg);
        let body = self.send(req).await?.bytes().await?;
        crate::client::parse(&body)
    }

    /// A server-streaming Connect call: one request message, a stream of responses. An error
    /// in the end-of-stream frame ends the stream with that error.
    pub(crate) async fn server_stream<Req: Serialize, Resp: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        msg: &Req,
        headers: &[(&str, String)],
    ) -> Result<MessageStream<Resp>> {
        let mut req = self
            .request(reqwest::Method::POST, &format!("/{method}"))
            .header("Content-Type", connect::STREAM_CONTENT_TYPE)
            .header("Connect-Protocol-Version", "1")
            .body(connect::encode_message(msg));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self.send(req).await?;
        Ok(decode_stream(resp.bytes_stream()))
    }
}

/// Turns a Connect response body into its messages.
fn decode_stream<Resp: DeserializeOwned + Send + 'static>(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> MessageStream<Resp> {
    struct State<B> {
        body: Pin<Box<B>>,
        decoder: Decoder,
        done: bool,
    }
    let state = State {
        body: Box::pin(body),
        decoder: Decoder::new(MAX_MESSAGE),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.decoder.next_envelope() {
                Err(e) => {
                    st.done = true;
                    return Some((Err(Error::Protocol(e.to_string())), st));
                }
                Ok(Some(env)) if env.flags & FLAG_END_STREAM != 0 => {
                    st.done = true;
                    let v: serde_json::Value =
                        serde_json::from_slice(&env.payload).unwrap_or_default();
                    if v["error"].is_object() {
                        return Some((Err(Error::from_connect(&v["error"])), st));
                    }
                    return None;
                }
                Ok(Some(env)) => {
                    let item = crate::client::parse(&env.payload);
                    return Some((item, st));
                }
                Ok(None) => {}
            }
            match st.body.next().await {
                Some(Ok(chunk)) => st.decoder.push(&chunk),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(Error::Http(e)), st));
                }
                None => {
                    st.done = true;
                    if st.decoder.pending() > 0 {
                        return Some((
                            Err(Error::Protocol("the stream ended mid-message".into())),
                            st,
                        ));
                    }
                    return None;
                }
            }
        }
    }))
}
