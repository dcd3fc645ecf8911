//! `process.Process` messages (spec §3.3). Field numbers are in each doc comment.
//! proto3 `optional` fields are `Option`s that are omitted when unset (presence matters).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

crate::proto_enum!(
    /// `Signal`
    Signal {
        Unspecified = 0 => "SIGNAL_UNSPECIFIED",
        Sigterm = 15 => "SIGNAL_SIGTERM",
        Sigkill = 9 => "SIGNAL_SIGKILL",
    }
);

/// `PTY { Size size = 1 }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pty {
    /// 1
    pub size: PtySize,
}

/// `PTY.Size { uint32 cols = 1; uint32 rows = 2 }`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PtySize {
    pub cols: u32,
    pub rows: u32,
}

/// `ProcessConfig`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessConfig {
    /// 1
    pub cmd: String,
    /// 2
    pub args: Vec<String>,
    /// 3
    pub envs: BTreeMap<String, String>,
    /// 4 (optional)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `ProcessInfo`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessInfo {
    /// 1
    pub config: ProcessConfig,
    /// 2
    pub pid: u32,
    /// 3 (optional)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListRequest {}

/// `ListResponse { repeated ProcessInfo processes = 1 }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListResponse {
    pub processes: Vec<ProcessInfo>,
}

/// `StartRequest`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StartRequest {
    /// 1
    pub process: ProcessConfig,
    /// 2 (optional)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
    /// 3 (optional)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// 4 (optional; absent means true, as old SDKs expect)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
}

/// `ProcessSelector { oneof selector { uint32 pid = 1; string tag = 2; } }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessSelector {
    Pid(u32),
    Tag(String),
}

impl Default for ProcessSelector {
    fn default() -> Self {
        ProcessSelector::Pid(0)
    }
}

/// `UpdateRequest { ProcessSelector process = 1; optional PTY pty = 2; }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateRequest {
    pub process: ProcessSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
}

/// `ProcessEvent { oneof event { start = 1; data = 2; end = 3; keepalive = 4; } }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessEvent {
    Start(StartEvent),
    Data(DataEvent),
    End(EndEvent),
    Keepalive(Empty),
}

/// `StartEvent { uint32 pid = 1 }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartEvent {
    pub pid: u32,
}

/// `DataEvent { oneof output { bytes stdout = 1; bytes stderr = 2; bytes pty = 3; } }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataEvent {
    #[serde(with = "crate::json::b64")]
    Stdout(Vec<u8>),
    #[serde(with = "crate::json::b64")]
    Stderr(Vec<u8>),
    #[serde(with = "crate::json::b64")]
    Pty(Vec<u8>),
}

/// `EndEvent { sint32 exit_code = 1; bool exited = 2; string status = 3; optional string error = 4; }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndEvent {
    #[serde(alias = "exit_code")]
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `StartResponse { ProcessEvent event = 1 }` and `ConnectResponse` (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResponse {
    pub event: ProcessEvent,
}

/// `ProcessInput { oneof input { bytes stdin = 1; bytes pty = 2; } }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessInput {
    #[serde(with = "crate::json::b64")]
    Stdin(Vec<u8>),
    #[serde(with = "crate::json::b64")]
    Pty(Vec<u8>),
}

/// `SendInputRequest { ProcessSelector process = 1; ProcessInput input = 2; }`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendInputRequest {
    #[serde(default)]
    pub process: ProcessSelector,
    pub input: Option<ProcessInput>,
}

/// `StreamInputRequest { oneof event { start = 1; data = 2; keepalive = 3; } }`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamInputEvent {
    /// `StartEvent { ProcessSelector process = 1 }`
    Start {
        #[serde(default)]
        process: ProcessSelector,
    },
    /// `DataEvent { ProcessInput input = 2 }`
    Data {
        input: Option<ProcessInput>,
    },
    Keepalive(Empty),
}

/// The oneof sits on the message itself: `{"start":{…}}`, `{"data":{…}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamInputRequest {
    #[serde(flatten)]
    pub event: StreamInputEvent,
}

/// `SendSignalRequest { ProcessSelector process = 1; Signal signal = 2; }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendSignalRequest {
    pub process: ProcessSelector,
    pub signal: Signal,
}

/// `CloseStdinRequest` / `ConnectRequest`: `{ ProcessSelector process = 1 }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SelectorRequest {
    pub process: ProcessSelector,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_from_the_wire() {
        let r: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"X":"1"},"cwd":"/tmp"},"stdin":false,"unknown":1}"#,
        )
        .unwrap();
        assert_eq!(r.process.args[2], "echo hi");
        assert_eq!(r.process.cwd.as_deref(), Some("/tmp"));
        assert_eq!(r.stdin, Some(false));
        assert!(r.pty.is_none());
    }

    #[test]
    fn events_serialize_as_oneofs() {
        let s = serde_json::to_string(&EventResponse {
            event: ProcessEvent::Data(DataEvent::Stdout(b"hi\n".to_vec())),
        })
        .unwrap();
        assert_eq!(s, r#"{"event":{"data":{"stdout":"aGkK"}}}"#);
        let s = serde_json::to_string(&EventResponse {
            event: ProcessEvent::End(EndEvent {
                exit_code: 1,
                exited: true,
                status: "exit status 1".into(),
                error: None,
            }),
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"event":{"end":{"exitCode":1,"exited":true,"status":"exit status 1"}}}"#
        );
    }

    #[test]
    fn signals_and_inputs_parse() {
        let r: SendSignalRequest =
            serde_json::from_str(r#"{"process":{"pid":42},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
        assert_eq!(r.process, ProcessSelector::Pid(42));
        assert_eq!(r.signal, Signal::Sigkill);
        let r: SendSignalRequest =
            serde_json::from_str(r#"{"process":{"pid":1},"signal":15}"#).unwrap();
        assert_eq!(r.signal, Signal::Sigterm);
        let r: SendInputRequest =
            serde_json::from_str(r#"{"process":{"pid":42},"input":{"stdin":"YWJj"}}"#).unwrap();
        assert_eq!(r.input, Some(ProcessInput::Stdin(b"abc".to_vec())));
        let r: StreamInputRequest =
            serde_json::from_str(r#"{"data":{"input":{"pty":"YQ=="}}}"#).unwrap();
        assert!(matches!(
            r.event,
            StreamInputEvent::Data {
                input: Some(ProcessInput::Pty(_))
            }
        ));
    }
}
