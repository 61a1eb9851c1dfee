//! Files the root daemon trusts, reached only through directory descriptors.
//!
//! Everything the daemon keeps on disk lives in a tree only root may write.
//! A [`TrustedDir`] is a descriptor of one directory of that tree, checked
//! when it was opened; everything below it is reached relative to that
//! descriptor, one name at a time. A name is a single component (never `/`,
//! `.` or `..`), opened with `O_NOFOLLOW` (and `O_NONBLOCK`, so a FIFO cannot
//! hang the daemon), so nothing planted in the tree can redirect a read or a
//! write, and no path is ever resolved again from the root.
//!
//! Every file or directory opened is checked on its own descriptor: owned by
//! root, of the expected type, writable by nobody else, and (when written in
//! place) not a hard link to something elsewhere. What an older Kepler left
//! group-writable by group root (`0770`, `0640`) is tightened to `0700` and
//! `0600`; anything else untrusted is refused with the reason.
//!
//! The API is small on purpose: open or create a directory, read a file with
//! a size bound, open a file to append or update, write a file atomically,
//! list, remove. The config store, the state directory and the log store
//! (`logs/dir.rs`) use it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{
    fchmod, fchown, fstat, fsync, mkdirat, openat, renameat, statat, unlinkat, AtFlags, Dir,
    FileType, Gid, Mode, OFlags, Stat,
};

/// Mode of every directory below the state root.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file below the state root.
pub const FILE_MODE: u32 = 0o600;
/// Deepest tree [`TrustedDir::remove_tree`] walks; the daemon's own trees
/// are three levels deep.
const MAX_TREE_DEPTH: usize = 8;

/// Why a file of the state tree could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not safe to use: {reason}", path.display())]
    Untrusted { path: PathBuf, reason: String },
    #[error("{} is larger than {limit} bytes, more than kepler ever writes there", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
}

impl TrustError {
    fn io(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        TrustError::Io {
            path: path.into(),
            source: source.into(),
        }
    }

    fn untrusted(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TrustError::Untrusted {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// True when the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TrustError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl From<TrustError> for io::Error {
    fn from(error: TrustError) -> Self {
        match error {
            // Kept whole, so the OS error stays reachable as its source
            // (see `logs::io_hint`).
            TrustError::Io { ref source, .. } => io::Error::new(source.kind(), error),
            other => io::Error::other(other.to_string()),
        }
    }
}

/// What a name in the tree is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    File,
}

/// A checked directory of the daemon's state tree.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    /// Where it was opened, for messages only: never resolved again.
    path: PathBuf,
}

/// `name` as a single path component, or an error saying why not.
fn component(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a single file name", name.to_string_lossy()),
        ));
    }
    if bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file name contains a NUL byte",
        ));
    }
    Ok(name)
}

/// The name of a file type, for messages.
fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// Checks an opened descriptor: the expected type, owned by root, writable
/// by nobody else. Group write by group root (what older layouts used) is
/// taken away rather than refused, as is any group or other access; the
/// file is then `root:root` with [`DIR_MODE`] or [`FILE_MODE`].
fn check_and_tighten(path: &Path, fd: BorrowedFd<'_>, want: Kind) -> Result<Stat, TrustError> {
    let stat = fstat(fd).map_err(|e| TrustError::io(path, e))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    let expected = match want {
        Kind::Directory => FileType::Directory,
        Kind::File => FileType::RegularFile,
    };
    if kind != expected {
        return Err(TrustError::untrusted(
            path,
            format!(
                "it is {} where {} was expected",
                describe(kind),
                describe(expected)
            ),
        ));
    }
    if stat.st_uid != 0 {
        return Err(TrustError::untrusted(
            path,
            format!("it is owned by uid {}, not root", stat.st_uid),
        ));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o002 != 0 {
        return Err(TrustError::untrusted(
            path,
            format!("every user may write it (mode {mode:04o})"),
        ));
    }
    if mode & 0o020 != 0 && stat.st_gid != 0 {
        return Err(TrustError::untrusted(
            path,
            format!(
                "the members of group {} may write it (mode {mode:04o})",
                stat.st_gid
            ),
        ));
    }
    if stat.st_gid != 0 {
        fchown(fd, None, Some(Gid::ROOT)).map_err(|e| TrustError::io(path, e))?;
    }
    let target = match want {
        Kind::Directory => DIR_MODE,
        Kind::File => FILE_MODE,
    };
    if mode != target {
        fchmod(fd, Mode::from_raw_mode(target)).map_err(|e| TrustError::io(path, e))?;
    }
    Ok(stat)
}

/// A fresh temporary name next to `name`, unique within this process.
fn temp_name(name: &OsStr) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    temp
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

impl TrustedDir {
    /// Opens the directory at the absolute `path` (its last component not
    /// followed) and checks it like any directory of the tree. For a
    /// directory whose parents only root can change: in-process tests and
    /// examples; the daemon reaches its own directories from the state root.
    pub fn open_absolute(path: &Path) -> Result<TrustedDir, TrustError> {
        let fd = openat(rustix::fs::CWD, path, DIR_FLAGS, Mode::empty())
            .map_err(|e| TrustError::io(path, e))?;
        check_and_tighten(path, fd.as_fd(), Kind::Directory)?;
        Ok(TrustedDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a directory descriptor its opener has already checked (the
    /// state root, whose owner and mode `state_dir` decides).
    pub(crate) fn from_checked(fd: OwnedFd, path: PathBuf) -> Self {
        TrustedDir { fd, path }
    }

    /// Where this directory was opened; for messages, never re-resolved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path that reaches this very directory through its descriptor
    /// (`/proc/self/fd/N`), for the few calls that only take paths (`bind`).
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// `name` inside this directory, for messages.
    pub fn shown(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// Another descriptor of the same directory.
    pub fn try_clone(&self) -> io::Result<TrustedDir> {
        Ok(TrustedDir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Opens the subdirectory `name`; `None` when it does not exist.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> Result<Option<TrustedDir>, TrustError> {
        let name = name.as_ref();
        let shown = self.shown(name);
        let name = component(name).map_err(|e| TrustError::io(&shown, e))?;
        let fd = match openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                let kind = statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|s| describe(FileType::from_raw_mode(s.st_mode)))
                    .unwrap_or("not a directory");
                return Err(TrustError::untrusted(
                    shown,
                    format!("it is {kind} where a directory was expected"),
                ));
            }
            Err(e) => return Err(TrustError::io(shown, e)),
        };
        check_and_tighten(&shown, fd.as_fd(), Kind::Directory)?;
        Ok(Some(TrustedDir { fd, path: shown }))
    }

    /// Opens the subdirectory `name`, creating it (`0700`) if needed.
    pub fn create_dir(&self, name: impl AsRef<OsStr>) -> Result<TrustedDir, TrustError> {
        let name = name.as_ref();
        let shown = self.shown(name);
        let checked = component(name).map_err(|e| TrustError::io(&shown, e))?;
        match mkdirat(&self.fd, checked, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(TrustError::io(shown, e)),
        }
        self.open_dir(name)?.ok_or_else(|| {
            TrustError::io(
                shown,
                io::Error::other("vanished right after it was created"),
            )
        })
    }

    /// Opens the file `name` with `flags`, checked; `None` when missing and
    /// `flags` does not create it.
    fn open_file(
        &self,
        name: &OsStr,
        flags: OFlags,
        in_place: bool,
    ) -> Result<Option<File>, TrustError> {
        let shown = self.shown(name);
        let name = component(name).map_err(|e| TrustError::io(&shown, e))?;
        let fd = match openat(
            &self.fd,
            name,
            FILE_FLAGS | flags,
            Mode::from_raw_mode(FILE_MODE),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            // A link (ELOOP), a FIFO without reader (ENXIO), a directory...:
            // say what is there rather than the errno.
            Err(e) => {
                return Err(match statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile => {
                        TrustError::untrusted(
                            shown,
                            format!(
                                "it is {} where a regular file was expected",
                                describe(FileType::from_raw_mode(stat.st_mode))
                            ),
                        )
                    }
                    _ => TrustError::io(shown, e),
                })
            }
        };
        let stat = check_and_tighten(&shown, fd.as_fd(), Kind::File)?;
        if in_place && stat.st_nlink != 1 {
            return Err(TrustError::untrusted(
                shown,
                format!(
                    "it has {} hard links, so writing it could change a file elsewhere",
                    stat.st_nlink
                ),
            ));
        }
        Ok(Some(File::from(fd)))
    }

    /// Reads the file `name`, refusing more than `limit` bytes (counted
    /// while reading); `None` when it does not exist.
    pub fn read(&self, name: impl AsRef<OsStr>, limit: u64) -> Result<Option<Vec<u8>>, TrustError> {
        let name = name.as_ref();
        let Some(file) = self.open_file(name, OFlags::RDONLY, false)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| TrustError::io(self.shown(name), e))?;
        if bytes.len() as u64 > limit {
            return Err(TrustError::TooLarge {
                path: self.shown(name),
                limit,
            });
        }
        Ok(Some(bytes))
    }

    /// Opens the file `name` to read it; `None` when it does not exist.
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> Result<Option<File>, TrustError> {
        self.open_file(name.as_ref(), OFlags::RDONLY, false)
    }

    /// Opens `name` for appending, creating it (`0600`) if needed.
    pub fn open_append(&self, name: impl AsRef<OsStr>) -> Result<File, TrustError> {
        let name = name.as_ref();
        self.open_file(name, OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE, true)?
            .ok_or_else(|| TrustError::io(self.shown(name), io::ErrorKind::NotFound))
    }

    /// Opens `name` to write it in place without creating it; `None` when
    /// it does not exist.
    pub fn open_write(&self, name: impl AsRef<OsStr>) -> Result<Option<File>, TrustError> {
        self.open_file(name.as_ref(), OFlags::WRONLY, true)
    }

    /// Creates `name` (`0600`) for writing; fails if anything is there.
    pub fn create_new(&self, name: impl AsRef<OsStr>) -> Result<File, TrustError> {
        let name = name.as_ref();
        self.open_file(name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, true)?
            .ok_or_else(|| TrustError::io(self.shown(name), io::ErrorKind::NotFound))
    }

    /// Opens `name` for reading and writing in place, creating it (`0600`)
    /// if needed and keeping what it holds.
    pub fn open_update(&self, name: impl AsRef<OsStr>) -> Result<File, TrustError> {
        let name = name.as_ref();
        self.open_file(name, OFlags::RDWR | OFlags::CREATE, true)?
            .ok_or_else(|| TrustError::io(self.shown(name), io::ErrorKind::NotFound))
    }

    /// Replaces `name` with `contents` atomically: a fresh temporary file
    /// (`O_EXCL`, `0600`), fsync, rename over `name`, fsync of the directory.
    /// A crash leaves the old file or the new one, never a torn one, and a
    /// link planted at `name` is replaced, never written through.
    pub fn write_atomic(&self, name: impl AsRef<OsStr>, contents: &[u8]) -> Result<(), TrustError> {
        let name = name.as_ref();
        let shown = self.shown(name);
        let name = component(name).map_err(|e| TrustError::io(&shown, e))?;
        let temp = temp_name(name);
        let result = (|| -> io::Result<()> {
            let fd = openat(
                &self.fd,
                &temp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | FILE_FLAGS,
                Mode::from_raw_mode(FILE_MODE),
            )?;
            let mut file = File::from(fd);
            file.write_all(contents)?;
            file.sync_all()?;
            renameat(&self.fd, &temp, &self.fd, name)?;
            // The rename must survive a power cut too.
            fsync(&self.fd)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = unlinkat(&self.fd, &temp, AtFlags::empty());
            return Err(TrustError::io(shown, e));
        }
        Ok(())
    }

    /// Renames `from` to `to` within this directory (a link is renamed,
    /// never followed).
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> Result<(), TrustError> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let shown = self.shown(from);
        let from = component(from).map_err(|e| TrustError::io(&shown, e))?;
        let to = component(to).map_err(|e| TrustError::io(&shown, e))?;
        renameat(&self.fd, from, &self.fd, to).map_err(|e| TrustError::io(shown, e))
    }

    /// Removes the entry `name` (anything but a directory); true if it
    /// existed. A link is removed, never its target.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> Result<bool, TrustError> {
        let name = name.as_ref();
        let shown = self.shown(name);
        let name = component(name).map_err(|e| TrustError::io(&shown, e))?;
        match unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(TrustError::io(shown, e)),
        }
    }

    /// Removes `name` and everything below it, walking by descriptor and
    /// never following a link.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> Result<(), TrustError> {
        let name = name.as_ref();
        let shown = self.shown(name);
        let checked = component(name).map_err(|e| TrustError::io(&shown, e))?;
        remove_entry(self.fd.as_fd(), checked, &shown, 0)
    }

    /// The names in this directory (without `.` and `..`), in no order.
    pub fn entries(&self) -> Result<Vec<OsString>, TrustError> {
        list(self.fd.as_fd()).map_err(|e| TrustError::io(&self.path, e))
    }

    /// Metadata of `name` itself (a link is not followed); `None` if missing.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> Result<Option<Stat>, TrustError> {
        let name = name.as_ref();
        let shown = self.shown(name);
        let name = component(name).map_err(|e| TrustError::io(&shown, e))?;
        match statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(TrustError::io(shown, e)),
        }
    }
}

impl AsFd for TrustedDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

fn remove_entry(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
    depth: usize,
) -> Result<(), TrustError> {
    let stat = match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(TrustError::io(shown, e)),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return match unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(TrustError::io(shown, e)),
        };
    }
    if depth >= MAX_TREE_DEPTH {
        return Err(TrustError::untrusted(
            shown,
            format!("it is nested deeper than {MAX_TREE_DEPTH} levels"),
        ));
    }
    let dir =
        openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|e| TrustError::io(shown, e))?;
    for child in list(dir.as_fd()).map_err(|e| TrustError::io(shown, e))? {
        remove_entry(dir.as_fd(), &child, &shown.join(&child), depth + 1)?;
    }
    match unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(TrustError::io(shown, e)),
    }
}

#[cfg(test)]
mod tests;
