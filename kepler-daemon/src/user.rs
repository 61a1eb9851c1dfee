//! Resolving a service's `user:` / `group:` strings into the numeric identity
//! its process will run as.
//!
//! Everything that reads `/etc/passwd` and `/etc/group` (through NSS) happens
//! here, in the daemon, before a child is forked: those lookups allocate and
//! take locks, so they must never run between `fork` and `exec`. The process
//! layer only applies the finished [`ResolvedUser`] with plain syscalls.
//!
//! The lookups are blocking file reads; async callers should run
//! [`resolve_user`] in `spawn_blocking` when many services are resolved at once.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

/// The identity a service runs as, fully resolved in the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    /// Primary group: the passwd entry's group unless `uid:gid` or `group:`
    /// chose another one.
    pub gid: u32,
    /// The exact list handed to `setgroups` in the child. Empty when the uid
    /// has no passwd entry (the root daemon's own groups are still dropped).
    pub supplementary: Vec<u32>,
    /// Login name, when the uid has a passwd entry.
    pub name: Option<String>,
    /// Home directory from the passwd entry, when there is one.
    pub home: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user `{0}`: expected a user name, a numeric uid or `uid:gid`")]
    InvalidUser(String),
    #[error("invalid group `{0}`: expected a group name or a numeric gid")]
    InvalidGroup(String),
    #[error(
        "user `{0}` does not exist on this system; create it (e.g. `useradd`) or use a numeric uid"
    )]
    UnknownUser(String),
    #[error(
        "group `{0}` does not exist on this system; create it (e.g. `groupadd`) or use a numeric gid"
    )]
    UnknownGroup(String),
    #[error("cannot look up {what} `{name}`: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Resolves a config's `user` (`name`, `uid` or `uid:gid`; either side of
/// the colon may also be a name) and optional `group` (name or gid, which
/// overrides any gid from `user`).
///
/// A bare uid without a passwd entry is accepted, as container runtimes do:
/// its gid is the same number and it gets no supplementary groups. A user that
/// has a passwd entry gets the groups `getgrouplist` reports for its name and
/// chosen primary gid, so an overridden primary group keeps the user's other
/// memberships.
pub fn resolve_user(user: &str, group: Option<&str>) -> Result<ResolvedUser, UserError> {
    let (user_part, gid_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if user_part.is_empty() || gid_part.is_some_and(str::is_empty) {
        return Err(UserError::InvalidUser(user.to_owned()));
    }

    let (uid, entry) = match parse_id(user_part) {
        Some(uid) => (uid, lookup_user_by_uid(uid, user_part)?),
        None => {
            let entry = lookup_user_by_name(user_part)?;
            (entry.uid.as_raw(), Some(entry))
        }
    };

    // `group:` wins over the gid half of `uid:gid`, which wins over passwd.
    let gid = match group.or(gid_part) {
        Some(spec) => resolve_group(spec, group.is_some())?,
        None => entry.as_ref().map_or(uid, |entry| entry.gid.as_raw()),
    };

    let supplementary = match &entry {
        Some(entry) => groups_of(&entry.name, gid)?,
        None => Vec::new(),
    };

    Ok(ResolvedUser {
        uid,
        gid,
        supplementary,
        name: entry.as_ref().map(|entry| entry.name.clone()),
        home: entry.map(|entry| entry.dir),
    })
}

/// `HOME`, `USER` and `LOGNAME` of the target user, for callers that build a
/// service environment. Variables whose value is unknown (no passwd entry)
/// are left out rather than guessed.
pub fn identity_env(user: &ResolvedUser) -> Vec<(String, String)> {
    let mut vars = Vec::with_capacity(3);
    if let Some(home) = &user.home {
        vars.push(("HOME".to_owned(), home.to_string_lossy().into_owned()));
    }
    if let Some(name) = &user.name {
        vars.push(("USER".to_owned(), name.clone()));
        vars.push(("LOGNAME".to_owned(), name.clone()));
    }
    vars
}

/// Numeric ids are all digits, as `chown` reads them.
fn parse_id(s: &str) -> Option<u32> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn lookup_user_by_name(name: &str) -> Result<User, UserError> {
    if name.contains('\0') {
        return Err(UserError::InvalidUser(name.to_owned()));
    }
    User::from_name(name)
        .map_err(|source| UserError::Lookup {
            what: "user",
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| UserError::UnknownUser(name.to_owned()))
}

fn lookup_user_by_uid(uid: u32, spelled: &str) -> Result<Option<User>, UserError> {
    User::from_uid(Uid::from_raw(uid)).map_err(|source| UserError::Lookup {
        what: "uid",
        name: spelled.to_owned(),
        source,
    })
}

/// `explicit_group` only changes which error an invalid spelling reports.
fn resolve_group(spec: &str, explicit_group: bool) -> Result<u32, UserError> {
    if let Some(gid) = parse_id(spec) {
        return Ok(gid);
    }
    if spec.is_empty() || spec.contains('\0') {
        return Err(if explicit_group {
            UserError::InvalidGroup(spec.to_owned())
        } else {
            UserError::InvalidUser(spec.to_owned())
        });
    }
    Group::from_name(spec)
        .map_err(|source| UserError::Lookup {
            what: "group",
            name: spec.to_owned(),
            source,
        })?
        .map(|group| group.gid.as_raw())
        .ok_or_else(|| UserError::UnknownGroup(spec.to_owned()))
}

fn groups_of(name: &str, gid: u32) -> Result<Vec<u32>, UserError> {
    let lookup_error = |source| UserError::Lookup {
        what: "the groups of user",
        name: name.to_owned(),
        source,
    };
    let c_name = CString::new(name).map_err(|_| lookup_error(nix::Error::EINVAL))?;
    let groups = getgrouplist(&c_name, Gid::from_raw(gid)).map_err(lookup_error)?;
    Ok(groups.into_iter().map(Gid::as_raw).collect())
}
