//! The log directory: every file is opened, renamed and removed relative to
//! its descriptor, by a plain name that cannot contain `/`, never through a
//! symlink, and never blocking on a FIFO someone planted.
//!
//! It is a [`TrustedDir`] of the config's state directory, so log files get
//! the same checks as every other file of the daemon's tree (owned by root,
//! writable by nobody else, a regular file); this module only adds what the
//! log store needs on top: identities of files (to pair the two segments a
//! reader opened) and plain `io::Result`s.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{io_error, LogError};
use crate::trusted_fs::TrustedDir;

/// An open log directory.
#[derive(Debug)]
pub struct LogDir {
    dir: TrustedDir,
}

/// Identity of a file: (device, inode).
pub(crate) type FileId = (u64, u64);

pub(crate) fn file_id(file: &File) -> io::Result<FileId> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

impl LogDir {
    /// The log directory the daemon opened through the config's store.
    pub fn from_trusted(dir: TrustedDir) -> LogDir {
        LogDir { dir }
    }

    /// Creates `path` if needed (mode 0700) and opens it, for tests and
    /// tools; the daemon uses [`LogDir::from_trusted`]. The last component
    /// must be a real directory, not a symlink.
    pub fn open(path: impl Into<PathBuf>) -> Result<LogDir, LogError> {
        let path = path.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(io_error(&path))?;
        if !std::fs::symlink_metadata(&path)
            .map_err(io_error(&path))?
            .is_dir()
        {
            return Err(LogError::NotADirectory { path });
        }
        let dir = TrustedDir::open_absolute(&path).map_err(|e| io_error(&path)(e.into()))?;
        Ok(LogDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `name` inside the directory, for messages.
    pub fn display_path(&self, name: &str) -> PathBuf {
        self.dir.shown(name)
    }

    /// Opens `name` for appending, creating it.
    pub(crate) fn open_append(&self, name: &str) -> io::Result<File> {
        Ok(self.dir.open_append(name)?)
    }

    /// Creates `name` empty for writing, replacing nothing: a leftover is
    /// removed first.
    pub(crate) fn create_new(&self, name: &str) -> io::Result<File> {
        self.remove(name)?;
        Ok(self.dir.create_new(name)?)
    }

    /// Opens `name` for reading; `None` if it does not exist.
    pub(crate) fn open_read(&self, name: &str) -> io::Result<Option<File>> {
        Ok(self.dir.open_read(name)?)
    }

    /// Opens `name` for writing without creating it; `None` if missing.
    pub(crate) fn open_write(&self, name: &str) -> io::Result<Option<File>> {
        Ok(self.dir.open_write(name)?)
    }

    /// Renames `from` to `to` atomically, replacing `to`.
    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(self.dir.rename(from, to)?)
    }

    /// Removes `name`; a missing file is already removed.
    pub(crate) fn remove(&self, name: &str) -> io::Result<()> {
        self.dir.remove_file(name)?;
        Ok(())
    }

    /// The identity of what `name` is now (not following a symlink);
    /// `None` if it does not exist.
    pub(crate) fn id_of(&self, name: &str) -> io::Result<Option<FileId>> {
        Ok(self.dir.stat(name)?.map(|stat| (stat.st_dev, stat.st_ino)))
    }

    /// The names in the directory (without `.` and `..`), unsorted; names
    /// that are not UTF-8 were not written by kepler and are skipped.
    pub(crate) fn names(&self) -> io::Result<Vec<String>> {
        Ok(self
            .dir
            .entries()?
            .into_iter()
            .filter_map(|name| std::str::from_utf8(name.as_bytes()).ok().map(String::from))
            .collect())
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
