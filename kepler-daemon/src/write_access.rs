//! Whether anyone but root could change a file, judged the way sshd's
//! `StrictModes` judges `authorized_keys`.
//!
//! What root runs must be written only by root: a root-owned config whose
//! file, env files or Lua files another user can modify would let that user
//! run anything as root. A file passes when it is owned by root and not
//! writable by its group or others, and every directory above it is owned by
//! root and not writable by its group or others, unless the directory has
//! the sticky bit (`/tmp`): there, others may add names but not replace or
//! rename what root owns. POSIX ACLs need no separate look: a named entry
//! that grants write shows in the group bits (the ACL mask).
//!
//! The same rule guards the state directory's parents.

use std::fmt;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file root must not trust, and who besides root could change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenToOthers {
    /// The file, or the directory that makes it replaceable.
    pub path: PathBuf,
    /// The file the check was about (the same as `path` when the file
    /// itself is at fault).
    pub file: PathBuf,
    /// Who could change it, in words: `uid 1000 (alice), its owner`.
    pub who: String,
}

impl fmt::Display for OpenToOthers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path == self.file {
            write!(
                f,
                "{} can be changed by {}; everything a root-owned config reads must be \
                 writable only by root (like sshd's StrictModes): fix its owner or mode",
                self.path.display(),
                self.who
            )
        } else {
            write!(
                f,
                "{} is in {}, which {} can write, so they could replace it; everything a \
                 root-owned config reads must be writable only by root (like sshd's \
                 StrictModes): fix the directory's owner or mode, or move the file",
                self.file.display(),
                self.path.display(),
                self.who
            )
        }
    }
}

/// Why a check could not be made, or what it found.
#[derive(Debug)]
pub enum Verdict {
    OpenToOthers(OpenToOthers),
    Io(PathBuf, io::Error),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::OpenToOthers(open) => open.fmt(f),
            Verdict::Io(path, e) => {
                write!(f, "cannot check who may change {}: {e}", path.display())
            }
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(gid.into()) {
        Ok(Some(group)) => format!("group {} (gid {gid})", group.name),
        _ => format!("gid {gid}"),
    }
}

/// Who besides root may write something with this metadata, if anyone.
/// `sticky_ok`: a sticky directory open to others is fine.
fn others_who_may_write(meta: &Metadata, sticky_ok: bool) -> Option<String> {
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != 0 {
        return Some(format!("{}, its owner", user_name(meta.uid())));
    }
    let sticky = sticky_ok && mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky {
        return Some(format!("every user (mode {mode:04o})"));
    }
    if mode & 0o020 != 0 && !sticky {
        return Some(format!(
            "the members of {} (mode {mode:04o})",
            group_name(meta.gid())
        ));
    }
    None
}

/// Checks the directories from `dir` up to `/` (`dir` must be canonical):
/// each owned by root and writable only by root unless sticky.
pub fn check_directories(dir: &Path, file: &Path) -> Result<(), Verdict> {
    for ancestor in dir.ancestors() {
        let meta = std::fs::symlink_metadata(ancestor)
            .map_err(|e| Verdict::Io(ancestor.to_path_buf(), e))?;
        if let Some(who) = others_who_may_write(&meta, true) {
            return Err(Verdict::OpenToOthers(OpenToOthers {
                path: ancestor.to_path_buf(),
                file: file.to_path_buf(),
                who,
            }));
        }
    }
    Ok(())
}

/// Checks an opened file (`meta` from its descriptor) and every directory
/// above it. `path` is where it was opened; its directory is resolved, so a
/// symlink on the way is judged by where it leads.
pub fn check_file(path: &Path, meta: &Metadata) -> Result<(), Verdict> {
    if let Some(who) = others_who_may_write(meta, false) {
        return Err(Verdict::OpenToOthers(OpenToOthers {
            path: path.to_path_buf(),
            file: path.to_path_buf(),
            who,
        }));
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = parent
        .canonicalize()
        .map_err(|e| Verdict::Io(parent.to_path_buf(), e))?;
    check_directories(&dir, path)
}

/// Whether this process bakes with root's rights, so that every file it
/// reads for a config must pass [`check_file`].
pub fn reading_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn as_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("SKIP: the ownership cases need root because files must be owned by uid 0");
        false
    }

    fn check(path: &Path) -> Result<(), Verdict> {
        let meta = fs::metadata(path).unwrap();
        check_file(path, &meta)
    }

    #[test]
    fn a_root_file_in_root_directories_and_in_sticky_tmp_passes() {
        if !as_root() {
            return;
        }
        // tempdir() is /tmp (sticky) / a 0700 root directory.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kepler.yaml");
        fs::write(&file, "x").unwrap();
        check(&file).unwrap();
    }

    #[test]
    fn a_file_another_user_owns_or_may_write_is_named_with_who() {
        if !as_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kepler.yaml");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let err = check(&file).unwrap_err().to_string();
        assert!(err.contains("every user (mode 0666)"), "{err}");

        fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
        let err = check(&file).unwrap_err().to_string();
        assert!(err.contains("the members of group"), "{err}");
        assert!(err.contains("StrictModes"), "{err}");

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let err = check(&file).unwrap_err().to_string();
        assert!(err.contains("uid 65534"), "{err}");
        assert!(err.contains("its owner"), "{err}");
    }

    #[test]
    fn a_directory_others_may_write_without_the_sticky_bit_is_named() {
        if !as_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let file = open.join("kepler.yaml");
        fs::write(&file, "x").unwrap();
        let err = check(&file).unwrap_err();
        match &err {
            Verdict::OpenToOthers(found) => {
                assert_eq!(found.path, open.canonicalize().unwrap());
                assert_eq!(found.file, file);
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("could replace it"), "{err}");

        // With the sticky bit, others cannot replace what root owns.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        check(&file).unwrap();
    }
}
