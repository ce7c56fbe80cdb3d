//! Who is on the other end of an admin connection, and whether they may
//! be: the kernel's SO_PEERCRED credentials are checked on every
//! connection, whatever the socket file's mode says.

use std::path::Path;

/// The credentials of a connected admin client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its pid, when the kernel reports one.
    pub pid: Option<i32>,
    /// Its user name (the uid as text when it has none).
    pub user: String,
}

/// Who may use the admin API: root, the user the host runs as, and members
/// of the admin group when one is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The host's own effective uid.
    pub owner_uid: u32,
    /// The admin group: its gid and member names.
    pub group: Option<AdminGroup>,
}

/// A configured admin group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGroup {
    /// Its name.
    pub name: String,
    /// Its gid.
    pub gid: u32,
    /// Users listed as members in `/etc/group`.
    pub members: Vec<String>,
}

/// Why a group could not be used.
#[derive(Debug, thiserror::Error)]
#[error("admin group {0:?} does not exist in /etc/group")]
pub struct UnknownGroup(pub String);

impl AdminGroup {
    /// Looks `name` up in `/etc/group`.
    pub fn lookup(name: &str) -> Result<Self, UnknownGroup> {
        let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
        parse_group(&text, name).ok_or_else(|| UnknownGroup(name.to_owned()))
    }
}

fn parse_group(text: &str, name: &str) -> Option<AdminGroup> {
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let (n, _, gid, members) = (f.next()?, f.next()?, f.next()?, f.next().unwrap_or(""));
        (n == name).then_some(())?;
        Some(AdminGroup {
            name: n.to_owned(),
            gid: gid.parse().ok()?,
            members: members
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    })
}

/// The name of `uid` in `passwd` (the text of `/etc/passwd`).
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

impl Peer {
    /// The peer of `stream`, as the kernel reports it.
    /// (`/etc/passwd` is read on a blocking thread, not the runtime's.)
    pub async fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        let passwd = tokio::fs::read_to_string(Path::new("/etc/passwd"))
            .await
            .unwrap_or_default();
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            user: user_name(&passwd, cred.uid()).unwrap_or_else(|| cred.uid().to_string()),
        })
    }
}

impl AccessPolicy {
    /// Whether `peer` may use the admin API.
    pub fn allows(&self, peer: &Peer) -> bool {
        if peer.uid == 0 || peer.uid == self.owner_uid {
            return true;
        }
        self.group
            .as_ref()
            .is_some_and(|g| peer.gid == g.gid || g.members.contains(&peer.user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, user: &str) -> Peer {
        Peer {
            uid,
            gid,
            pid: Some(1),
            user: user.into(),
        }
    }

    #[test]
    fn root_and_owner_only_without_a_group() {
        let p = AccessPolicy {
            owner_uid: 500,
            group: None,
        };
        assert!(p.allows(&peer(0, 0, "root")));
        assert!(p.allows(&peer(500, 500, "ds")));
        assert!(!p.allows(&peer(1000, 1000, "alice")));
    }

    #[test]
    fn group_members_by_gid_or_listing() {
        let text = "root:x:0:\nds-admin:x:998:alice,bob\nusers:x:100:\n";
        let group = parse_group(text, "ds-admin").unwrap();
        assert_eq!(group.gid, 998);
        assert_eq!(group.members, ["alice", "bob"]);
        assert!(parse_group(text, "nope").is_none());
        let p = AccessPolicy {
            owner_uid: 0,
            group: Some(group),
        };
        assert!(p.allows(&peer(1000, 1000, "alice")));
        assert!(p.allows(&peer(1002, 998, "carol")));
        assert!(!p.allows(&peer(1003, 100, "mallory")));
    }

    #[test]
    fn names_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 7), None);
    }
}
