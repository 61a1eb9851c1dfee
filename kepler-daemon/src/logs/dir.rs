//! The log directory as a directory fd: every file is opened, renamed and
//! removed relative to it, by a plain name that cannot contain `/`, never
//! through a symlink, and never blocking on a FIFO someone planted.
//!
//! The daemon is root and the directory sits in a state directory other
//! people may look into, so nothing here resolves a path twice: the
//! directory is opened once and what is inside is reached through that fd.
//! (These are the few `*at` calls the log store needs; the state directory
//! has its own.)

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{io_error, LogError};

/// An open log directory.
#[derive(Debug)]
pub struct LogDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// Identity of a file: (device, inode).
pub(crate) type FileId = (u64, u64);

pub(crate) fn file_id(file: &File) -> io::Result<FileId> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// A file name inside the log directory: one component, no `/`, no NUL,
/// not `.` or `..`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn c_name(name: &str) -> io::Result<CString> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl LogDir {
    /// Creates `path` if needed (mode 0750 before umask) and opens it. The
    /// last component must be a real directory, not a symlink.
    pub fn open(path: impl Into<PathBuf>) -> Result<LogDir, LogError> {
        let path = path.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&path)
            .map_err(io_error(&path))?;
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| io_error(&path)(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: a valid C string; the fd returned is owned below.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        match cvt(fd) {
            // SAFETY: a fresh fd nobody else owns.
            Ok(fd) => Ok(LogDir {
                path,
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
            }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                Err(LogError::NotADirectory { path })
            }
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` inside the directory, for messages.
    pub fn display_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn open_at(&self, name: &str, flags: libc::c_int) -> io::Result<File> {
        let c = c_name(name)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: a valid directory fd and C string; the fd returned is owned below.
        let fd = cvt(unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags, 0o640) })?;
        // SAFETY: a fresh fd nobody else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file (a FIFO, device or directory is in the way)",
            ));
        }
        Ok(file)
    }

    /// Opens `name` for appending, creating it (mode 0640 before umask).
    pub(crate) fn open_append(&self, name: &str) -> io::Result<File> {
        self.open_at(name, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT)
    }

    /// Creates `name` empty for writing, replacing nothing: a leftover is
    /// removed first.
    pub(crate) fn create_new(&self, name: &str) -> io::Result<File> {
        self.remove(name)?;
        self.open_at(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
    }

    /// Opens `name` for reading; `None` if it does not exist.
    pub(crate) fn open_read(&self, name: &str) -> io::Result<Option<File>> {
        match self.open_at(name, libc::O_RDONLY) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens `name` for writing without creating it; `None` if missing.
    pub(crate) fn open_write(&self, name: &str) -> io::Result<Option<File>> {
        match self.open_at(name, libc::O_WRONLY) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renames `from` to `to` atomically, replacing `to`.
    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (c_name(from)?, c_name(to)?);
        let dir = self.fd.as_raw_fd();
        // SAFETY: valid directory fd and C strings.
        cvt(unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) }).map(drop)
    }

    /// Removes `name`; a missing file is already removed.
    pub(crate) fn remove(&self, name: &str) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid directory fd and C string.
        match cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The identity of what `name` is now (not following a symlink);
    /// `None` if it does not exist.
    pub(crate) fn id_of(&self, name: &str) -> io::Result<Option<FileId>> {
        let c = c_name(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid directory fd and C string; `st` is written on success.
        let ret = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match cvt(ret) {
            Ok(_) => {
                // SAFETY: fstatat succeeded, so it filled `st`.
                let st = unsafe { st.assume_init() };
                Ok(Some((st.st_dev, st.st_ino)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names in the directory (without `.` and `..`), unsorted.
    pub(crate) fn names(&self) -> io::Result<Vec<String>> {
        // A fresh open of the directory itself, not a dup: a dup would share
        // its reading position with every other listing going on at once.
        // SAFETY: a valid directory fd and a C string literal.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c".".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` is a fresh directory fd, handed over to the DIR.
        let dir = unsafe { libc::fdopendir(fd) };
        if dir.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so the fd is still ours to close.
            unsafe { libc::close(fd) };
            return Err(err);
        }
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; readdir returns null at the end or on error.
            unsafe { *libc::__errno_location() = 0 };
            let entry = unsafe { libc::readdir(dir) };
            if entry.is_null() {
                let errno = io::Error::last_os_error();
                break match errno.raw_os_error() {
                    Some(0) | None => Ok(()),
                    _ => Err(errno),
                };
            }
            // SAFETY: a non-null entry from readdir holds a NUL-terminated name.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if let Ok(name) = name.to_str() {
                if name != "." && name != ".." {
                    names.push(name.to_string());
                }
            }
        };
        // SAFETY: closes the stream and the fd it owns.
        unsafe { libc::closedir(dir) };
        result.map(|()| names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_at_the_same_time_each_see_every_name() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..500 {
            std::fs::write(tmp.path().join(format!("f{i}.stdout.log")), "").unwrap();
        }
        let dir = std::sync::Arc::new(LogDir::open(tmp.path()).unwrap());
        let listers: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| dir.names().unwrap().len())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for lister in listers {
            assert!(lister.join().unwrap().iter().all(|&n| n == 500));
        }
    }

    #[test]
    fn names_with_a_slash_or_dots_are_refused_and_symlinks_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::open(tmp.path().join("logs")).unwrap();
        for bad in ["../x", "a/b", "..", ".", ""] {
            let err = dir.open_append(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        std::os::unix::fs::symlink(tmp.path().join("target"), tmp.path().join("logs/link"))
            .unwrap();
        assert!(dir.open_append("link").is_err());
        assert!(dir.open_read("link").is_err());
        assert!(!tmp.path().join("target").exists());

        dir.open_append("a").unwrap();
        let id = dir.id_of("a").unwrap();
        dir.rename("a", "b").unwrap();
        assert_eq!(dir.id_of("a").unwrap(), None);
        assert_eq!(dir.id_of("b").unwrap(), id);
        dir.remove("b").unwrap();
        dir.remove("b").unwrap();
        assert_eq!(dir.open_read("b").unwrap().map(|_| ()), None);
    }

    #[test]
    fn a_symlink_in_place_of_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("logs")).unwrap();
        assert!(matches!(
            LogDir::open(tmp.path().join("logs")),
            Err(LogError::NotADirectory { .. })
        ));
    }
}
