//! What `ds-host` and `dsctl` share, and nothing more: the admin API's
//! JSON types and error codes ([`admin`]), the bounds of every resource
//! limit with the parsers that enforce them ([`limits`]), and where the
//! admin socket lives by default. Kept free of the host's and the
//! sandbox's dependencies so that `dsctl` builds without them.

pub mod admin;
pub mod limits;

/// Which runtime files an app needs besides its own: what a manifest
/// says (`runtime = "native"`) and what `ds-sandbox --runtime` mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A native executable: the system's shared libraries are mounted.
    Native,
    /// A Deno program: the libraries and the Deno binary are mounted.
    Deno,
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Self::Native),
            "deno" => Ok(Self::Deno),
            _ => Err(format!("unknown runtime {s:?} (native or deno)")),
        }
    }
}

/// The production admin socket, when the config names none.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/ds/admin.sock";

/// The host uids (and gids: an appspace's gid is the same number) that ds
/// gives appspaces when it runs as root. Both ranges lie in
/// 1879048192..=2147352575 (0x70000000..0x7FFDFFFF), which no range
/// Debian or systemd hands out overlaps: not system or regular users
/// (0-59999), systemd-homed, DynamicUser or `nobody` (60001-65535), the
/// subordinate ids `useradd` gives (`/etc/subuid`, 100000-600100000),
/// systemd's container range (524288-1879048191) nor its foreign range
/// (2147352576-2147418111), and stays below 2^31, which some tools read
/// as signed.
pub mod ids {
    use std::ops::RangeInclusive;

    /// Allocated by ds-host, one per appspace, in its state database.
    pub const HOST_IDS: RangeInclusive<u32> = 0x7000_0000..=0x70FF_FFFF;
    /// Derived from the data directory by `ds-sandbox exec` run by hand as
    /// root without `--host-uid` (an author trying an app): apart from the
    /// host's, so a trial can never share an appspace's uid.
    pub const STANDALONE_IDS: RangeInclusive<u32> = 0x7100_0000..=0x71FF_FFFF;
    /// The front door's uid and gid when ds-host runs as root without a
    /// system user for it (dev mode, the self-test); the Debian package
    /// will create one (docs/privsep.md).
    pub const FRONT_DOOR_DEV_ID: u32 = 0x7200_0000;
}
