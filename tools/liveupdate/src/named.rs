// SPDX-License-Identifier: GPL-2.0
//! Preserving fds by name, with a manifest the next boot reads.
//!
//! The kernel cannot list a session's tokens after the update, so every client needs its own
//! record of which token is which fd. This module keeps one in the session itself: token 0
//! holds a sealed memfd with a small JSON manifest, and the named fds get tokens from 1 up.
//!
//! # Format (version 1)
//!
//! The memfd (named `liveupdate-manifest`, sealed against writes, growing and shrinking) holds
//! compact UTF-8 JSON:
//!
//! ```json
//! {"format":"liveupdate-manifest","version":1,"entries":[{"name":"guest-ram","token":1}]}
//! ```
//!
//! Readers reject another `format` or a higher `version`, ignore unknown fields, and reject
//! token 0, duplicate names or tokens. Names are 1 to 255 bytes with no control characters.
//!
//! # systemd
//!
//! systemd (v261, `FileDescriptorStorePreserve=`) uses the same idea with its own format: one
//! session named `systemd`, token 0 a sealed memfd of JSON
//! `{"version":1,"state":{..},"units":{"<unit>":{"fdstore":[{"type":"fd","name":"<fdname>",`
//! `"token":N}]}}}` (`state` holds systemd's own `KExecCount` and shutdown timestamps;
//! `tests/fixtures/systemd-262.1-luo-mapping.json` is what systemd 262.1 wrote in
//! client:systemd).
//! That format is internal to systemd and changed three times before v261, and systemd holds
//! `/dev/liveupdate` itself around the kexec, so this crate does not write it. It can read it
//! ([`Manifest::parse`] accepts both), which lets a tool inspect what systemd preserved;
//! entries are then named `<unit>/<fdname>`. To hand fds to systemd, create your own session
//! and put the session fd in the unit's fd store, which systemd preserves as a whole.

use crate::memfd;
use crate::{Error, ErrorKind, IncomingSession, Op, OutgoingSession, Result, Token};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{fcntl_add_seals, SealFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The token of the manifest memfd.
pub const MANIFEST_TOKEN: Token = Token(0);
/// The `format` field of our manifests.
pub const FORMAT: &str = "liveupdate-manifest";
/// The manifest version this crate writes and the highest it reads.
pub const VERSION: u32 = 1;
/// The longest name, in bytes.
pub const MAX_NAME: usize = 255;

/// One named fd of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The fd's name.
    pub name: String,
    /// The token it is preserved under.
    pub token: u64,
}

/// Where a manifest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// This crate's format.
    Ours,
    /// systemd's fd-store mapping (read only).
    Systemd,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Which format it was.
    pub flavor: Flavor,
    /// The entries, in file order.
    pub entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct OursV1 {
    format: String,
    version: u32,
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct SystemdV1 {
    version: u32,
    #[serde(default)]
    units: BTreeMap<String, SystemdUnit>,
}

#[derive(Deserialize)]
struct SystemdUnit {
    #[serde(default)]
    fdstore: Vec<SystemdFd>,
}

#[derive(Deserialize)]
struct SystemdFd {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    token: Option<u64>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::new(Op::Manifest, ErrorKind::BadManifest, detail)
}

/// Check a name: 1 to [`MAX_NAME`] bytes, no control characters.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(bad(format!("invalid name {name:?}")));
    }
    Ok(())
}

impl Manifest {
    /// Parse a manifest in our format or systemd's.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let entries = match v.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {
                let m: OursV1 =
                    serde_json::from_value(v).map_err(|e| bad(format!("bad manifest: {e}")))?;
                if m.version > VERSION {
                    return Err(bad(format!(
                        "version {} is newer than {VERSION}",
                        m.version
                    )));
                }
                (Flavor::Ours, m.entries)
            }
            Some(other) => return Err(bad(format!("unknown format {other:?}"))),
            None => {
                let m: SystemdV1 = serde_json::from_value(v)
                    .map_err(|e| bad(format!("neither our format nor systemd's: {e}")))?;
                if m.version != 1 {
                    return Err(bad(format!(
                        "systemd mapping version {} unknown",
                        m.version
                    )));
                }
                let mut entries = Vec::new();
                for (unit, u) in m.units {
                    for fd in u.fdstore {
                        // Nested sessions ("luo_session") carry no token; only fds do.
                        if let ("fd", Some(token)) = (fd.kind.as_str(), fd.token) {
                            entries.push(Entry {
                                name: format!("{unit}/{}", fd.name),
                                token,
                            });
                        }
                    }
                }
                (Flavor::Systemd, entries)
            }
        };
        let m = Manifest {
            flavor: entries.0,
            entries: entries.1,
        };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        let mut tokens = std::collections::BTreeSet::new();
        for e in &self.entries {
            check_name(&e.name)?;
            if e.token == MANIFEST_TOKEN.0 {
                return Err(bad(format!("{:?} uses the manifest's token 0", e.name)));
            }
            if !names.insert(e.name.as_str()) {
                return Err(bad(format!("duplicate name {:?}", e.name)));
            }
            if !tokens.insert(e.token) {
                return Err(bad(format!("duplicate token {}", e.token)));
            }
        }
        Ok(())
    }

    /// Serialize in our format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let m = OursV1 {
            format: FORMAT.into(),
            version: VERSION,
            entries: self.entries.clone(),
        };
        // Serializing plain strings and integers cannot fail.
        serde_json::to_vec(&m).unwrap_or_default()
    }

    /// The token of `name`.
    pub fn token(&self, name: &str) -> Option<Token> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| Token(e.token))
    }

    /// Read the manifest of an incoming session.
    pub fn read(session: &IncomingSession) -> Result<Self> {
        Self::read_with_bytes(session).map(|(m, _)| m)
    }

    /// [`Manifest::read`], also returning the manifest's bytes as its writer left them.
    pub fn read_with_bytes(session: &IncomingSession) -> Result<(Self, Vec<u8>)> {
        let fd = session.retrieve(MANIFEST_TOKEN).map_err(|e| {
            if e.kind() == ErrorKind::TokenNotFound {
                bad("the session has no manifest at token 0")
            } else {
                e
            }
        })?;
        let bytes = memfd::read_all(&fd).map_err(|e| Error::from_errno(Op::Manifest, e))?;
        Ok((Self::parse(&bytes)?, bytes))
    }
}

/// An outgoing session whose fds are preserved by name.
///
/// Call [`NamedSession::commit`] after the last [`NamedSession::preserve`]: it preserves the
/// manifest. Until then the next kernel would find the fds but not their names.
#[derive(Debug)]
pub struct NamedSession {
    session: OutgoingSession,
    entries: Vec<Entry>,
}

impl NamedSession {
    /// Start naming fds in `session` (which must not have preserved anything yet).
    pub fn new(session: OutgoingSession) -> Self {
        Self {
            session,
            entries: Vec::new(),
        }
    }

    /// Preserve `fd` as `name`; returns the token it got.
    pub fn preserve(&mut self, name: &str, fd: impl AsFd) -> Result<Token> {
        check_name(name)?;
        if self.entries.iter().any(|e| e.name == name) {
            return Err(bad(format!("name {name:?} is used already")));
        }
        let token = Token(self.entries.last().map_or(1, |e| e.token + 1));
        self.session.preserve(fd, token)?;
        self.entries.push(Entry {
            name: name.into(),
            token: token.0,
        });
        Ok(token)
    }

    /// Unpreserve the fd named `name` (see [`OutgoingSession::unpreserve`]) and drop it from the
    /// manifest; returns the token it had.
    pub fn unpreserve(&mut self, name: &str) -> Result<Token> {
        let i = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| Error::new(Op::Unpreserve, ErrorKind::TokenNotFound, name))?;
        let token = Token(self.entries[i].token);
        self.session.unpreserve(token)?;
        self.entries.remove(i);
        Ok(token)
    }

    /// Write, seal and preserve the manifest; returns the session to keep open.
    pub fn commit(self) -> Result<OutgoingSession> {
        let m = Manifest {
            flavor: Flavor::Ours,
            entries: self.entries,
        };
        let bytes = m.to_bytes();
        let err = |e| Error::from_errno(Op::Manifest, e);
        let fd = memfd::create("liveupdate-manifest", 0).map_err(err)?;
        let mut done = 0;
        while done < bytes.len() {
            done += rustix::io::pwrite(&fd, &bytes[done..], done as u64).map_err(err)?;
        }
        fcntl_add_seals(
            &fd,
            SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
        )
        .map_err(err)?;
        self.session.preserve(&fd, MANIFEST_TOKEN)?;
        Ok(self.session)
    }
}

/// Retrieve every named fd of an incoming session; returns them in manifest order.
pub fn retrieve_all(session: &IncomingSession) -> Result<(Manifest, Vec<(String, OwnedFd)>)> {
    let m = Manifest::read(session)?;
    let mut out = Vec::with_capacity(m.entries.len());
    for e in &m.entries {
        out.push((e.name.clone(), session.retrieve(Token(e.token))?));
    }
    Ok((m, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest in our format with the given entries (JSON array contents).
    fn ours(version: u32, entries: &str) -> String {
        format!(r#"{{"format":"liveupdate-manifest","version":{version},"entries":[{entries}]}}"#)
    }

    fn entry(name: &str, token: u64) -> Entry {
        Entry {
            name: name.into(),
            token,
        }
    }

    #[test]
    fn roundtrip() {
        let m = Manifest {
            flavor: Flavor::Ours,
            entries: vec![entry("guest-ram", 1), entry("vmstate", 2)],
        };
        let b = m.to_bytes();
        let want = ours(
            1,
            r#"{"name":"guest-ram","token":1},{"name":"vmstate","token":2}"#,
        );
        assert_eq!(std::str::from_utf8(&b).unwrap(), want);
        assert_eq!(Manifest::parse(&b).unwrap(), m);
        assert_eq!(m.token("vmstate"), Some(Token(2)));
    }

    #[test]
    fn rejects() {
        let k = |s: &str| Manifest::parse(s.as_bytes()).unwrap_err().kind();
        let bad = [
            "nope".to_string(),
            r#"{"format":"x","version":1,"entries":[]}"#.to_string(),
            ours(2, ""),
            ours(1, r#"{"name":"a","token":0}"#),
            ours(1, r#"{"name":"a","token":1},{"name":"a","token":2}"#),
            ours(1, r#"{"name":"a","token":1},{"name":"b","token":1}"#),
            ours(1, r#"{"name":"a\n","token":1}"#),
            ours(1, r#"{"name":"","token":1}"#),
        ];
        for b in &bad {
            assert_eq!(k(b), ErrorKind::BadManifest, "{b}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let text = ours(1, r#"{"name":"a","token":5,"y":1}"#).replacen('{', r#"{"x":3,"#, 1);
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.entries, vec![entry("a", 5)]);
    }

    /// The mapping systemd 262.1 wrote for client:systemd's service, as `luoctl manifest
    /// systemd` read it after the kexec (harness/luh/client.py, the control run).
    #[test]
    fn reads_mapping_systemd_wrote() {
        let text = include_bytes!("../tests/fixtures/systemd-262.1-luo-mapping.json");
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.flavor, Flavor::Systemd);
        assert_eq!(
            m.entries,
            vec![
                entry("lu-fdstore.service/state", 1),
                entry("lu-fdstore.service/ram", 2)
            ]
        );
    }

    #[test]
    fn reads_systemd_mapping() {
        let text = concat!(
            r#"{"version":1,"state":{"kexecsCount":2},"units":{"#,
            r#""qemu@vm1.service":{"fdstore":[{"type":"fd","name":"ram","token":1},"#,
            r#"{"type":"luo_session","name":"s","sessionName":"vm1"}]},"#,
            r#""b.service":{"fdstore":[{"type":"fd","name":"x","token":2}]}}}"#
        );
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.flavor, Flavor::Systemd);
        assert_eq!(
            m.entries,
            vec![entry("b.service/x", 2), entry("qemu@vm1.service/ram", 1)]
        );
        let newer = br#"{"version":2,"units":{}}"#;
        assert_eq!(
            Manifest::parse(newer).unwrap_err().kind(),
            ErrorKind::BadManifest
        );
    }
}
