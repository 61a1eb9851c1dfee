//! Who is on the other end of a connection, and whether they may use the daemon.
//!
//! Credentials come from the kernel (SO_PEERCRED for uid/gid/pid, SO_PEERGROUPS
//! for supplementary groups), never from anything the client sends.

use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

use kepler_protocol::KEPLER_GROUP;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group};

/// A connected client whose credentials passed [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Reads the peer's credentials from the socket.
pub fn peer_of(socket: &impl AsFd) -> std::io::Result<Caller> {
    let cred = getsockopt(socket, PeerCredentials)?;
    Ok(Caller {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
        groups: peer_groups(socket.as_fd().as_raw_fd())?,
    })
}

fn peer_groups(fd: i32) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes and the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}

/// The `kepler` group's id, if the group exists.
pub fn kepler_gid() -> Option<Gid> {
    Group::from_name(KEPLER_GROUP).ok().flatten().map(|g| g.gid)
}

/// Root, or a member of the `kepler` group (primary or supplementary), may
/// connect. Anyone else gets a reason that says how to get access.
pub fn authorize(caller: &Caller, kepler_gid: Option<Gid>) -> Result<(), String> {
    if caller.is_root() {
        return Ok(());
    }
    match kepler_gid {
        Some(gid) if caller.gid == gid.as_raw() || caller.groups.contains(&gid.as_raw()) => Ok(()),
        Some(_) => Err(format!(
            "permission denied: uid {} is not in the `{KEPLER_GROUP}` group; ask an \
             administrator to run `sudo usermod -aG {KEPLER_GROUP} <your user>`, then log in again",
            caller.uid
        )),
        None => Err(format!(
            "permission denied: the `{KEPLER_GROUP}` group does not exist, so only root may use \
             kepler; an administrator can create it with `sudo groupadd {KEPLER_GROUP}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_is_always_allowed() {
        assert!(authorize(&caller(0, 0, &[]), None).is_ok());
    }

    #[test]
    fn members_by_primary_or_supplementary_group_are_allowed() {
        let kepler = Some(Gid::from_raw(900));
        assert!(authorize(&caller(1000, 900, &[]), kepler).is_ok());
        assert!(authorize(&caller(1000, 1000, &[5, 900]), kepler).is_ok());
    }

    #[test]
    fn outsiders_are_told_which_group_to_join() {
        let err = authorize(&caller(1000, 1000, &[5]), Some(Gid::from_raw(900))).unwrap_err();
        assert!(err.contains("`kepler` group"), "{err}");
        assert!(err.contains("usermod -aG kepler"), "{err}");
        let err = authorize(&caller(1000, 1000, &[]), None).unwrap_err();
        assert!(err.contains("groupadd kepler"), "{err}");
    }
}
