//! Users and groups from the sandbox's `/etc/passwd` and `/etc/group`.
//!
//! Parsed directly: the agent is a static binary and must not call glibc's NSS.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
}

/// Looks a user up by name, re-reading the files each time (users may be added at run time).
pub fn lookup(name: &str) -> Option<User> {
    lookup_in(Path::new("/etc"), name)
}

pub fn lookup_in(etc: &Path, name: &str) -> Option<User> {
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let found = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == name);
    let Some(f) = found else {
        return unlisted(name);
    };
    let uid = f[2].parse().ok()?;
    let gid = f[3].parse().ok()?;
    let mut groups = vec![gid];
    if let Ok(group) = std::fs::read_to_string(etc.join("group")) {
        for g in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if g.len() >= 4 && g[3].split(',').any(|m| m == name) {
                if let Ok(id) = g[2].parse() {
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    Some(User {
        name: name.to_string(),
        uid,
        gid,
        home: PathBuf::from(f[5]),
        shell: f[6].to_string(),
        groups,
    })
}

/// A user an image's files do not list: `root` always exists (an image may have no
/// `/etc/passwd` at all), and a number (an image config's `User: 1000`) is that uid with the
/// same gid.
fn unlisted(name: &str) -> Option<User> {
    let uid: u32 = if name == "root" {
        0
    } else {
        name.parse().ok()?
    };
    Some(User {
        name: name.to_string(),
        uid,
        gid: uid,
        home: PathBuf::from(if uid == 0 { "/root" } else { "/" }),
        shell: "/bin/sh".into(),
        groups: vec![uid],
    })
}

/// Name of a uid or gid from the given file, or the number itself.
pub fn name_of(file: &str, id: u32) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<_> = l.split(':').collect();
                (f.len() > 2 && f[2].parse() == Ok(id)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_numeric_users_exist_without_passwd() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(lookup_in(d.path(), "root").map(|u| u.uid), Some(0));
        assert_eq!(
            lookup_in(d.path(), "1000").map(|u| (u.uid, u.gid)),
            Some((1000, 1000))
        );
        assert!(lookup_in(d.path(), "user").is_none());
    }

    #[test]
    fn parses_passwd_and_group() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("group"),
            "root:x:0:\nuser:x:1000:\nsudo:x:27:user,other\n",
        )
        .unwrap();
        let u = lookup_in(d.path(), "user").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, PathBuf::from("/home/user"));
        assert_eq!(u.groups, vec![1000, 27]);
        assert!(lookup_in(d.path(), "nobody").is_none());
    }
}
