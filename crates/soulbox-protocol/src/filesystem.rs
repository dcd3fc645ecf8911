//! `filesystem.Filesystem` messages (spec §3.4). Field numbers are in each doc comment.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

crate::proto_enum!(
    /// `FileType`
    FileType {
        Unspecified = 0 => "FILE_TYPE_UNSPECIFIED",
        File = 1 => "FILE_TYPE_FILE",
        Directory = 2 => "FILE_TYPE_DIRECTORY",
        Symlink = 3 => "FILE_TYPE_SYMLINK",
    }
);

crate::proto_enum!(
    /// `EventType`
    EventType {
        Unspecified = 0 => "EVENT_TYPE_UNSPECIFIED",
        Create = 1 => "EVENT_TYPE_CREATE",
        Write = 2 => "EVENT_TYPE_WRITE",
        Remove = 3 => "EVENT_TYPE_REMOVE",
        Rename = 4 => "EVENT_TYPE_RENAME",
        Chmod = 5 => "EVENT_TYPE_CHMOD",
    }
);

/// `EntryInfo`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EntryInfo {
    /// 1
    pub name: String,
    /// 2
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// 3
    pub path: String,
    /// 4 (int64 → decimal string)
    #[serde(with = "crate::json::i64_str")]
    pub size: i64,
    /// 5: permission bits only (Go's `FileMode.Perm()`; of the target for a symlink)
    pub mode: u32,
    /// 6: Go's `FileMode.String()` of the entry itself, e.g. `drwxr-xr-x`, `Lrwxrwxrwx`
    pub permissions: String,
    /// 7
    pub owner: String,
    /// 8
    pub group: String,
    /// 9: RFC 3339 UTC
    #[serde(alias = "modified_time")]
    pub modified_time: String,
    /// 10 (optional)
    #[serde(skip_serializing_if = "Option::is_none", alias = "symlink_target")]
    pub symlink_target: Option<String>,
    /// 11: user xattrs `user.e2b.*`, prefix stripped
    pub metadata: BTreeMap<String, String>,
    // No 12 (`is_symlink`): envd does not send it, and SDKs that know it report any entry
    // carrying it as a symlink instead of by its target's type, as envd's clients see it.
}

/// Requests that carry only `string path = 1` (Stat, MakeDir, Remove).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PathRequest {
    pub path: String,
}

/// Responses that carry only `EntryInfo entry = 1` (Stat, MakeDir, Move).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EntryResponse {
    pub entry: EntryInfo,
}

/// `MoveRequest { string source = 1; string destination = 2; }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MoveRequest {
    pub source: String,
    pub destination: String,
}

/// `ListDirRequest { string path = 1; uint32 depth = 2; }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListDirRequest {
    pub path: String,
    pub depth: u32,
}

/// `ListDirResponse { repeated EntryInfo entries = 1 }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListDirResponse {
    pub entries: Vec<EntryInfo>,
}

/// `WatchDirRequest` and `CreateWatcherRequest` (same fields 1–4).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatchRequest {
    pub path: String,
    pub recursive: bool,
    #[serde(alias = "include_entry")]
    pub include_entry: bool,
    #[serde(alias = "allow_network_mounts")]
    pub allow_network_mounts: bool,
}

/// `FilesystemEvent { string name = 1; EventType type = 2; optional EntryInfo entry = 3; }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesystemEvent {
    pub name: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// `WatchDirResponse { oneof event { start = 1; filesystem = 2; keepalive = 3; } }`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WatchEvent {
    Start(crate::process::Empty),
    Filesystem(Box<FilesystemEvent>),
    Keepalive(crate::process::Empty),
}

/// The oneof sits on the message itself, so its JSON has no `event` key: `{"start":{}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchDirResponse {
    #[serde(flatten)]
    pub event: WatchEvent,
}

/// `CreateWatcherResponse { string watcher_id = 1 }` and the requests keyed by it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatcherId {
    #[serde(alias = "watcher_id")]
    pub watcher_id: String,
}

/// `GetWatcherEventsResponse { repeated FilesystemEvent events = 1 }`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatcherEvents {
    pub events: Vec<FilesystemEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_info_uses_canonical_json() {
        let e = EntryInfo {
            name: "x".into(),
            file_type: FileType::Directory,
            size: 12,
            mode: 0o755,
            ..Default::default()
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "FILE_TYPE_DIRECTORY");
        assert_eq!(v["size"], "12");
        assert!(v.get("isSymlink").is_none());
        assert!(v.get("symlinkTarget").is_none());
        let back: EntryInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn watch_events_are_flat_oneofs() {
        let s = serde_json::to_string(&WatchDirResponse {
            event: WatchEvent::Start(Default::default()),
        })
        .unwrap();
        assert_eq!(s, r#"{"start":{}}"#);
        let back: WatchDirResponse = serde_json::from_str(r#"{"keepalive":{}}"#).unwrap();
        assert!(matches!(back.event, WatchEvent::Keepalive(_)));
    }

    #[test]
    fn requests_accept_both_name_styles() {
        let w: WatcherId = serde_json::from_str(r#"{"watcher_id":"w1"}"#).unwrap();
        assert_eq!(w.watcher_id, "w1");
        let w: WatchRequest =
            serde_json::from_str(r#"{"path":"/x","includeEntry":true,"recursive":true}"#).unwrap();
        assert!(w.include_entry && w.recursive);
    }
}
