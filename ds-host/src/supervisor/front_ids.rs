//! Which uid and gid the front door takes (docs/privsep.md): the
//! `ds-front` system user the Debian package creates, else the reserved
//! [`ds_api::ids::FRONT_DOOR_DEV_ID`] (dev mode on a machine without
//! it). A supervisor that is not root cannot change uids: the front door
//! then keeps the supervisor's, and is still confined by Landlock and
//! seccomp.

use std::path::Path;

/// The system user the Debian package makes for the front door.
pub const FRONT_DOOR_USER: &str = "ds-front";

/// The front door's (uid, gid), or `None` when the supervisor is not
/// root. `passwd` is read from `/etc/passwd`.
pub fn front_ids() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd")).unwrap_or_default();
    Some(user_ids(&passwd, FRONT_DOOR_USER).unwrap_or((
        ds_api::ids::FRONT_DOOR_DEV_ID,
        ds_api::ids::FRONT_DOOR_DEV_ID,
    )))
}

/// The uid and gid of `name` in `passwd` (the text of `/etc/passwd`),
/// never root's.
fn user_ids(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let uid: u32 = f.nth(1)?.parse().ok()?;
        let gid: u32 = f.next()?.parse().ok()?;
        (uid != 0 && gid != 0).then_some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_user_is_found_and_root_never() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nds-front:x:998:997::/nonexistent:/usr/sbin/nologin\nevil:x:0:5::/:/bin/sh\n";
        assert_eq!(user_ids(passwd, "ds-front"), Some((998, 997)));
        assert_eq!(user_ids(passwd, "evil"), None);
        assert_eq!(user_ids(passwd, "nobody"), None);
    }
}
