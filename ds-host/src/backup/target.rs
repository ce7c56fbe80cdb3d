//! Where the restic repository lives: a local directory (a USB disk, an NFS
//! mount) or an SFTP server reached with OpenSSH. A remote target is only
//! ever reached with the key and the known host keys the admin named:
//! batch mode (no prompt), strict host key checking (a changed or unknown
//! server is refused, never learnt), no user or system ssh configuration.

use std::fmt;
use std::path::{Path, PathBuf};

/// A repository's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A directory on this machine.
    Local(PathBuf),
    /// A directory on an SFTP server.
    Sftp(SftpTarget),
}

/// `sftp://user@host[:port]/absolute/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpTarget {
    /// The login.
    pub user: String,
    /// The server's name or address (IPv6 without brackets).
    pub host: String,
    /// Its SSH port.
    pub port: u16,
    /// The repository's absolute path on the server.
    pub path: String,
}

/// How ds logs in to an SFTP server: both files are named by the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccess {
    /// The private key (root only).
    pub key: PathBuf,
    /// The server's host keys, in OpenSSH's `known_hosts` format.
    pub known_hosts: PathBuf,
}

/// Why a target or its SSH access was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The text is neither an absolute path nor an SFTP URL.
    #[error(
        "backup repository {text:?}: {why} (expected an absolute path or sftp://user@host[:port]/path)"
    )]
    Malformed {
        /// What was given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An SFTP target without the key or the host keys.
    #[error("backup repository {target}: an SFTP repository needs {missing}")]
    NoAccess {
        /// The target.
        target: String,
        /// The setting it lacks.
        missing: &'static str,
    },
    /// A key or known-hosts path restic's command line cannot carry.
    #[error("{what} {path}: {why}")]
    BadFile {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
}

impl std::str::FromStr for Target {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, TargetError> {
        let bad = |why| TargetError::Malformed {
            text: text.to_owned(),
            why,
        };
        if text.starts_with('/') {
            if text.chars().any(char::is_control) {
                return Err(bad("control characters in the path"));
            }
            return Ok(Self::Local(PathBuf::from(text)));
        }
        let Some(rest) = text.strip_prefix("sftp://") else {
            return Err(bad("not an absolute path, and not sftp://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err(bad("no path on the server")),
        };
        if path.len() < 2 {
            return Err(bad("no path on the server"));
        }
        // The path reaches restic through ssh's argument splitting and the
        // SFTP protocol: plain characters only.
        if !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@=,".contains(c))
        {
            return Err(bad(
                "the path may hold only letters, digits and / . _ - + @ = ,",
            ));
        }
        if path.split('/').any(|p| p == "..") {
            return Err(bad("the path may not hold .."));
        }
        let Some((user, host_port)) = authority.split_once('@') else {
            return Err(bad("no user@ before the host"));
        };
        let user_ok = !user.is_empty()
            && user.len() <= 32
            && !user.starts_with('-')
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !user_ok {
            return Err(bad("the user must be letters, digits, . _ -"));
        }
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address in [ ]"));
            }
            (host, after.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && !host.starts_with('-')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
        if !host_ok {
            return Err(bad("the host must be a DNS name or an IP address"));
        }
        let port = match port {
            None => 22,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        Ok(Self::Sftp(SftpTarget {
            user: user.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        }))
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Sftp(s) if s.host.contains(':') => {
                write!(f, "sftp://{}@[{}]:{}{}", s.user, s.host, s.port, s.path)
            }
            Self::Sftp(s) => write!(f, "sftp://{}@{}:{}{}", s.user, s.host, s.port, s.path),
        }
    }
}

impl Target {
    /// `RESTIC_REPOSITORY` for this target. For SFTP restic connects with
    /// [`Target::sftp_command`] (which carries the port), so the address
    /// here only names the server in restic's messages.
    pub(crate) fn restic_repository(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Sftp(s) if s.host.contains(':') => {
                format!("sftp:{}@[{}]:{}", s.user, s.host, s.path)
            }
            Self::Sftp(s) => format!("sftp:{}@{}:{}", s.user, s.host, s.path),
        }
    }

    /// The local directory, if it is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Sftp(_) => None,
        }
    }

    /// Checks that an SFTP target has its SSH access, and that the files
    /// can be named on restic's `sftp.command` (which restic splits at
    /// blanks).
    pub fn check_access(&self, ssh: Option<&SshAccess>) -> Result<(), TargetError> {
        let Self::Sftp(_) = self else {
            return Ok(());
        };
        let Some(ssh) = ssh else {
            return Err(TargetError::NoAccess {
                target: self.to_string(),
                missing: "an SSH key and the server's host keys (backups.ssh_key, backups.ssh_known_hosts)",
            });
        };
        for (what, path) in [("SSH key", &ssh.key), ("known hosts", &ssh.known_hosts)] {
            let text = path.to_string_lossy();
            if !path.is_absolute() {
                return Err(TargetError::BadFile {
                    what,
                    path: path.clone(),
                    why: "must be an absolute path",
                });
            }
            if text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"'\\".contains(c))
            {
                return Err(TargetError::BadFile {
                    what,
                    path: path.clone(),
                    why: "may not hold blanks, quotes or backslashes",
                });
            }
        }
        Ok(())
    }

    /// restic's `sftp.command`: OpenSSH with the admin's key and host keys
    /// and nothing else (no config file, no agent, no prompt, no learning
    /// of new host keys), `None` for a local target.
    pub(crate) fn sftp_command(&self, ssh: &SshAccess) -> Option<String> {
        let Self::Sftp(s) = self else {
            return None;
        };
        Some(format!(
            "ssh -F none -i {key} -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o BatchMode=yes \
             -o ConnectTimeout=20 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 \
             -p {port} -l {user} {host} -s sftp",
            key = ssh.key.display(),
            known = ssh.known_hosts.display(),
            port = s.port,
            user = s.user,
            host = s.host,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sftp(user: &str, host: &str, port: u16, path: &str) -> Target {
        Target::Sftp(SftpTarget {
            user: user.into(),
            host: host.into(),
            port,
            path: path.into(),
        })
    }

    #[test]
    fn targets_parse_and_print_back() {
        assert_eq!(
            "/mnt/usb/ds".parse(),
            Ok(Target::Local("/mnt/usb/ds".into()))
        );
        for (text, want, shown) in [
            (
                "sftp://backup@nas.example.org/srv/ds",
                sftp("backup", "nas.example.org", 22, "/srv/ds"),
                "sftp://backup@nas.example.org:22/srv/ds",
            ),
            (
                "sftp://b@10.0.0.2:2222/r",
                sftp("b", "10.0.0.2", 2222, "/r"),
                "sftp://b@10.0.0.2:2222/r",
            ),
            (
                "sftp://b@[::1]:22/r",
                sftp("b", "::1", 22, "/r"),
                "sftp://b@[::1]:22/r",
            ),
        ] {
            let t: Target = text.parse().unwrap();
            assert_eq!(t, want, "{text}");
            assert_eq!(t.to_string(), shown);
            assert_eq!(shown.parse::<Target>().unwrap(), want);
        }
    }

    #[test]
    fn bad_targets_are_refused() {
        for bad in [
            "",
            "relative/dir",
            "sftp:b@host:/r",
            "s3://bucket",
            "sftp://host/r",
            "sftp://b@host",
            "sftp://b@host/",
            "sftp://b@host:0/r",
            "sftp://b@host:99999/r",
            "sftp://-oProxyCommand=x@host/r",
            "sftp://b@-oProxyCommand/r",
            "sftp://b@host/r r",
            "sftp://b@host/r;rm",
            "sftp://b@host/../etc",
            "sftp://b@[nothost]/r",
            "sftp://b c@host/r",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sftp_needs_its_access_and_uses_only_it() {
        let t: Target = "sftp://b@host:2222/r".parse().unwrap();
        assert!(t.check_access(None).is_err());
        let access = SshAccess {
            key: "/etc/ds/backup-key".into(),
            known_hosts: "/etc/ds/backup-known-hosts".into(),
        };
        t.check_access(Some(&access)).unwrap();
        let spaced = SshAccess {
            key: "/etc/ds/my key".into(),
            ..access.clone()
        };
        assert!(t.check_access(Some(&spaced)).is_err());
        let relative = SshAccess {
            known_hosts: "known".into(),
            ..access.clone()
        };
        assert!(t.check_access(Some(&relative)).is_err());
        let cmd = t.sftp_command(&access).unwrap();
        for part in [
            "-F none",
            "-i /etc/ds/backup-key",
            "UserKnownHostsFile=/etc/ds/backup-known-hosts",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "-p 2222 -l b host -s sftp",
        ] {
            assert!(cmd.contains(part), "{part} not in {cmd}");
        }
        assert_eq!(t.restic_repository(), "sftp:b@host:/r");
        let local = Target::Local("/srv".into());
        local.check_access(None).unwrap();
        assert_eq!(local.sftp_command(&access), None);
    }
}
