//! One cgroup v2 directory and what the daemon does with it: create it,
//! let a child join it, list and signal its members, kill it whole, read
//! its accounting, set its limits, remove it.
//!
//! Only the core interface files (`cgroup.*`) are needed for containment;
//! controller files (`memory.max`, `cpu.max`, ...) exist only where the
//! controller is enabled for the cgroup's parent, so their absence is
//! reported by the caller, never treated as a failure of containment.

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::removal;

/// The controllers Kepler uses. Others (hugetlb, rdma, misc, cpuset) are
/// left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    Cpu,
    Io,
    Memory,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 4] = [
        Controller::Cpu,
        Controller::Io,
        Controller::Memory,
        Controller::Pids,
    ];

    /// The name in `cgroup.controllers` and `cgroup.subtree_control`.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Io => "io",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }

    fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Controllers listed in a `cgroup.controllers` or `cgroup.subtree_control`
/// file (space-separated names); unknown ones are skipped.
pub fn parse_controllers(text: &str) -> Vec<Controller> {
    text.split_whitespace()
        .filter_map(Controller::from_name)
        .collect()
}

/// Limits written to a service's cgroup; `None` leaves the kernel default
/// (no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `memory.max` in bytes.
    pub memory_max: Option<u64>,
    /// `memory.swap.max` in bytes.
    pub swap_max: Option<u64>,
    /// `memory.oom.group`: an OOM kill takes every process of the cgroup.
    pub oom_group: bool,
    /// `cpu.max` as (quota, period) in microseconds.
    pub cpu_max: Option<(u64, u64)>,
    /// `pids.max`.
    pub pids_max: Option<u64>,
    /// `io.weight` (1-10000).
    pub io_weight: Option<u16>,
}

impl CgroupLimits {
    /// The interface files and values to write, in order, with the
    /// controller each needs and the config key it comes from.
    pub fn writes(&self) -> Vec<LimitWrite> {
        let mut writes = Vec::new();
        let mut push = |controller, file, value: String, key| {
            writes.push(LimitWrite {
                controller,
                file,
                value,
                key,
            })
        };
        if let Some(bytes) = self.memory_max {
            push(
                Controller::Memory,
                "memory.max",
                bytes.to_string(),
                "limits.memory",
            );
        }
        if let Some(bytes) = self.swap_max {
            push(
                Controller::Memory,
                "memory.swap.max",
                bytes.to_string(),
                "limits.swap",
            );
        }
        if self.oom_group {
            push(
                Controller::Memory,
                "memory.oom.group",
                "1".into(),
                "limits.memory",
            );
        }
        if let Some((quota, period)) = self.cpu_max {
            push(
                Controller::Cpu,
                "cpu.max",
                format!("{quota} {period}"),
                "limits.cpus",
            );
        }
        if let Some(pids) = self.pids_max {
            push(
                Controller::Pids,
                "pids.max",
                pids.to_string(),
                "limits.pids",
            );
        }
        if let Some(weight) = self.io_weight {
            push(
                Controller::Io,
                "io.weight",
                format!("default {weight}"),
                "limits.io_weight",
            );
        }
        writes
    }
}

/// One limit file write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    /// The config key a person would edit.
    pub key: &'static str,
}

/// A cgroup directory in the v2 hierarchy.
///
/// Its `cgroup.procs` is opened on first use by a stop (or a check for
/// leftovers) and kept while the handle lives, so one stop lists, signals
/// and checks the members through one descriptor; a one-off listing
/// ([`Cgroup::members`]) opens its own. A spawn opens its own
/// for the child to join through and closes it after: a running service
/// holds no descriptor.
///
/// When the handle goes, that descriptor goes to the removal thread to be
/// closed with the housekeeping after the stops (see [`super::removal`]):
/// closing a cgroup file makes the kernel free its open-file state, which a
/// stop of thousands of services would otherwise pay for on the way.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    procs: OnceLock<fs::File>,
    /// Which owner of `dir` this handle is (see [`super::removal`]); 0 for a
    /// handle that owns nothing.
    generation: u64,
    /// The parent directory, open: files are opened relative to it, a walk
    /// of two names instead of the whole path down from `/sys` on every
    /// stop.
    parent: Option<Arc<OwnedFd>>,
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Some(procs) = self.procs.take() {
            removal::close_later(procs);
        }
    }
}

impl Cgroup {
    /// Creates `dir` (its parent must exist); an existing cgroup is reused.
    /// The handle owns the cgroup until it is created again.
    pub fn create(dir: PathBuf) -> io::Result<Cgroup> {
        let generation = removal::create(&dir, None)?;
        Ok(Cgroup::new(dir, generation, None))
    }

    /// [`Self::create`] for a child of the directory open as `parent`.
    pub fn create_in(parent: &Arc<OwnedFd>, dir: PathBuf) -> io::Result<Cgroup> {
        let generation = removal::create(&dir, Some(parent))?;
        Ok(Cgroup::new(dir, generation, Some(Arc::clone(parent))))
    }

    /// A handle on an existing cgroup, without touching it.
    pub fn at(dir: PathBuf) -> Cgroup {
        Cgroup::new(dir, 0, None)
    }

    fn new(dir: PathBuf, generation: u64, parent: Option<Arc<OwnedFd>>) -> Cgroup {
        Cgroup {
            dir,
            procs: OnceLock::new(),
            generation,
            parent,
        }
    }

    /// The cgroup's directory opened for use as a parent (`O_PATH`).
    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.dir)?;
        Ok(file.into())
    }

    /// One of the cgroup's files, opened relative to the parent where it is
    /// open.
    fn open_file(&self, name: &str, write: bool) -> io::Result<fs::File> {
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        self.open_relative(name, flags).map(fs::File::from)
    }

    /// `name` inside the cgroup (`.` for the directory itself) with `flags`
    /// (close-on-exec added), relative to the open parent if there is one.
    fn open_relative(&self, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        let (at, path) = match (&self.parent, self.dir.file_name()) {
            (Some(parent), Some(leaf)) => (parent.as_raw_fd(), Path::new(leaf).join(name)),
            _ => (libc::AT_FDCWD, self.dir.join(name)),
        };
        let path = CString::new(path.into_os_string().into_vec())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `path` is NUL-terminated and lives across the call; the
        // returned descriptor is owned by the OwnedFd from here on.
        let fd = unsafe { libc::openat(at, path.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// An existing cgroup, owned from now on as if created here (one a
    /// previous daemon handed over).
    pub fn adopt_existing(dir: PathBuf) -> Cgroup {
        let generation = removal::adopt(&dir);
        Cgroup::new(dir, generation, None)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cgroup.procs`, kept open from now on (see the type's docs).
    pub fn procs(&self) -> io::Result<&fs::File> {
        if let Some(file) = self.procs.get() {
            return Ok(file);
        }
        let file = self.open_procs()?;
        // Another thread may have won the race; either file will do.
        Ok(self.procs.get_or_init(|| file))
    }

    /// `cgroup.procs` opened afresh for reading and writing (close-on-exec).
    fn open_procs(&self) -> io::Result<fs::File> {
        self.open_file("cgroup.procs", true)
    }

    /// The cgroup's own directory (`O_PATH`), for one spawn: the child is
    /// cloned straight into it (`CLONE_INTO_CGROUP`), or joins through its
    /// `cgroup.procs` where the kernel cannot do that.
    pub fn open_for_spawn(&self) -> io::Result<OwnedFd> {
        self.open_relative(".", libc::O_PATH | libc::O_DIRECTORY)
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn adopt(&self, pid: u32) -> io::Result<()> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Pids of the processes in this cgroup (not its descendants). A
    /// removed cgroup has none.
    ///
    /// Reads a `cgroup.procs` opened for this call only: `ps` asks this of
    /// every running service, which must not leave each holding a descriptor.
    pub fn members(&self) -> io::Result<Vec<i32>> {
        match self.open_core_file("cgroup.procs") {
            Ok(file) => MemberList(&file).read(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The members, listed again with one read each time; `None` once the
    /// cgroup is removed.
    pub fn member_list(&self) -> io::Result<Option<MemberList<'_>>> {
        match self.procs() {
            Ok(file) => Ok(Some(MemberList(file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a live process is in this cgroup or below (`populated` of
    /// `cgroup.events`). A removed cgroup is not populated.
    pub fn is_populated(&self) -> bool {
        self.events().is_ok_and(|events| events.is_populated())
    }

    /// `cgroup.events` kept open, to be read again cheaply while waiting.
    pub fn events(&self) -> io::Result<EventsFile> {
        self.open_core_file("cgroup.events").map(EventsFile)
    }

    fn open_core_file(&self, name: &str) -> io::Result<fs::File> {
        self.open_file(name, false)
    }

    /// Sends `signal` to every process of the cgroup (see
    /// [`MemberList::signal`]). Returns who was signalled.
    pub fn signal_members(&self, signal: Signal) -> io::Result<Vec<i32>> {
        match self.member_list()? {
            Some(list) => list.signal(signal),
            None => Ok(Vec::new()),
        }
    }

    /// SIGKILLs every process of the cgroup and its descendants at once
    /// (`cgroup.kill`, Linux 5.14); on older kernels, SIGKILL to each
    /// member until none is new.
    pub fn kill_all(&self) -> io::Result<()> {
        match write_file(&self.dir.join("cgroup.kill"), "1") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir.is_dir() => {
                self.signal_members(Signal::SIGKILL).map(drop)
            }
            // A cgroup that is gone has nothing left to kill.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the (empty) cgroup now; one that is already gone is fine.
    pub fn remove(&self) -> io::Result<()> {
        removal::remove_now(&self.dir)
    }

    /// Removes the empty cgroup soon, on the removal thread, unless it was
    /// created again meanwhile; a handle that owns nothing removes it now.
    pub fn remove_later(&self) {
        removal::remove_later(&self.dir, self.generation);
    }

    /// Which owner of its directory this handle is (0: none).
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Child cgroups, by directory.
    pub fn children(&self) -> io::Result<Vec<Cgroup>> {
        let mut children = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                children.push(Cgroup::at(entry.path()));
            }
        }
        Ok(children)
    }

    /// Controllers the parent makes available here (`cgroup.controllers`).
    pub fn controllers(&self) -> io::Result<Vec<Controller>> {
        Ok(parse_controllers(&fs::read_to_string(
            self.dir.join("cgroup.controllers"),
        )?))
    }

    /// Controllers enabled for the children (`cgroup.subtree_control`).
    pub fn subtree_control(&self) -> io::Result<Vec<Controller>> {
        Ok(parse_controllers(&fs::read_to_string(
            self.dir.join("cgroup.subtree_control"),
        )?))
    }

    /// Enables (`+`) or disables (`-`) one controller for the children.
    pub fn set_subtree_control(&self, controller: Controller, enable: bool) -> io::Result<()> {
        let sign = if enable { '+' } else { '-' };
        write_file(
            &self.dir.join("cgroup.subtree_control"),
            &format!("{sign}{}", controller.name()),
        )
    }

    /// Writes `limits`; returns the writes that failed, with why.
    pub fn apply_limits(&self, limits: &CgroupLimits) -> Vec<(LimitWrite, io::Error)> {
        limits
            .writes()
            .into_iter()
            .filter_map(|write| {
                write_file(&self.dir.join(write.file), &write.value)
                    .err()
                    .map(|e| (write, e))
            })
            .collect()
    }

    /// CPU time used by the cgroup's processes, alive or gone, in
    /// microseconds (`usage_usec` of `cpu.stat`, present without the cpu
    /// controller too).
    pub fn cpu_usage_usec(&self) -> io::Result<u64> {
        let text = self.read_small("cpu.stat")?;
        keyed_value(&text, "usage_usec")
            .ok_or_else(|| io::Error::other("cpu.stat has no usage_usec"))
    }

    /// One of the cgroup's small files (see [`read_small`]), opened
    /// relative to the parent where it is open: sampling reads these for
    /// every running service on every tick.
    fn read_small(&self, name: &str) -> io::Result<String> {
        read_small_from(&self.open_file(name, false)?)
    }

    /// `memory.current`, or `None` without the memory controller.
    pub fn memory_current(&self) -> Option<u64> {
        self.read_small("memory.current").ok()?.trim().parse().ok()
    }

    /// How many times the OOM killer killed a process of this cgroup
    /// (`oom_kill` of `memory.events`); 0 without the memory controller.
    pub fn oom_kills(&self) -> u64 {
        self.read_small("memory.events")
            .ok()
            .and_then(|text| keyed_value(&text, "oom_kill"))
            .unwrap_or(0)
    }
}

/// An open `cgroup.events`.
#[derive(Debug)]
pub struct EventsFile(fs::File);

impl EventsFile {
    /// `populated` as the file says now; a cgroup removed meanwhile is not.
    pub fn is_populated(&self) -> bool {
        let mut buf = [0u8; 128];
        match self.0.read_at(&mut buf, 0) {
            Ok(len) => std::str::from_utf8(&buf[..len]).is_ok_and(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("populated "))
                    .is_some_and(|value| value.trim() != "0")
            }),
            Err(_) => false,
        }
    }
}

/// An open `cgroup.procs`: the kernel lists the members afresh on every
/// read from offset 0, so one descriptor serves a whole stop.
#[derive(Debug, Clone, Copy)]
pub struct MemberList<'a>(&'a fs::File);

impl MemberList<'_> {
    /// The members now.
    pub fn read(&self) -> io::Result<Vec<i32>> {
        /// The kernel fills a read until its page-sized buffer would overflow
        /// by the next line (a pid, at most a dozen bytes); a read that stops
        /// well short of ours reached the end, and needs no second read.
        const LINE_MARGIN: usize = 64;
        let mut text = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let len = self.0.read_at(&mut chunk, text.len() as u64)?;
            text.extend_from_slice(&chunk[..len]);
            if len + LINE_MARGIN < chunk.len() {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect())
    }

    /// No process is in the cgroup itself. For the leaf cgroups Kepler
    /// makes (nobody else can create cgroups below them) that is
    /// `populated 0`, read from the descriptor already open.
    pub fn is_empty(&self) -> bool {
        let mut first = [0u8; 16];
        // A cgroup removed meanwhile reads as an error: empty too.
        self.0.read_at(&mut first, 0).map_or(true, |len| len == 0)
    }

    /// Sends `signal` to every member: to the process group `leader` leads
    /// with one `kill` (a fork in flight cannot escape that), then to each
    /// member outside it, reading the list again until a pass finds no one
    /// new. A service that never leaves its group costs one read.
    pub fn signal_scope(&self, leader: i32, signal: Signal) -> io::Result<Signalled> {
        let group = leader > 1
            && match kill(Pid::from_raw(-leader), signal) {
                Ok(()) => true,
                Err(Errno::ESRCH) => false,
                Err(errno) => return Err(errno.into()),
            };
        let outside = self.signal_until_none_new(signal, |pid| {
            pid != leader
                && nix::unistd::getpgid(Some(Pid::from_raw(pid))) != Ok(Pid::from_raw(leader))
        })?;
        Ok(Signalled {
            group,
            outside: outside.into_iter().collect(),
        })
    }

    /// Sends `signal` to every member, reading the list again until a pass
    /// finds no process it has not signalled (a member may fork while the
    /// list is read). Returns who was signalled.
    pub fn signal(&self, signal: Signal) -> io::Result<Vec<i32>> {
        Ok(self
            .signal_until_none_new(signal, |_| true)?
            .into_iter()
            .collect())
    }

    /// Sends `signal` to each member `wanted` picks, reading the list again
    /// until a pass finds no one new; returns who was signalled.
    fn signal_until_none_new(
        &self,
        signal: Signal,
        wanted: impl Fn(i32) -> bool,
    ) -> io::Result<HashSet<i32>> {
        /// Bounds a pathological fork storm; `kill` ends the job anyway.
        const MAX_PASSES: usize = 32;
        let mut signalled = HashSet::new();
        for _ in 0..MAX_PASSES {
            let fresh: Vec<i32> = self
                .read()?
                .into_iter()
                .filter(|&pid| pid > 1 && !signalled.contains(&pid) && wanted(pid))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                match kill(Pid::from_raw(pid), signal) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(errno) => return Err(errno.into()),
                }
                signalled.insert(pid);
            }
        }
        Ok(signalled)
    }
}

/// Who [`MemberList::signal_scope`] signalled.
#[derive(Debug, Default)]
pub struct Signalled {
    /// The leader's process group had a member left.
    pub group: bool,
    /// Members outside the leader's process group.
    pub outside: Vec<i32>,
}

impl Signalled {
    /// Nobody was left to signal.
    pub fn nobody(&self) -> bool {
        !self.group && self.outside.is_empty()
    }
}

/// A kernel-generated text file of a few hundred bytes (cgroup and `/proc`
/// files), usually in one `read`: such files report no size, so
/// `read_to_string` would probe them in small steps.
pub fn read_small(path: &Path) -> io::Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    read_small_from(&file)
}

/// [`read_small`] of a file open already.
fn read_small_from(file: &fs::File) -> io::Result<String> {
    const CHUNK: usize = 1024;
    let mut text = Vec::new();
    let mut chunk = [0u8; CHUNK];
    loop {
        // A read that leaves room reached the end (see MemberList::read).
        let len = file.read_at(&mut chunk, text.len() as u64)?;
        text.extend_from_slice(&chunk[..len]);
        if len + 64 < CHUNK {
            break;
        }
    }
    String::from_utf8(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The number after `key ` in a flat-keyed file like `cpu.stat`.
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

/// Interface files take one `write` each; a short write would be a
/// different request, so `write_all` is not used.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let written = file.write(value.as_bytes())?;
    if written != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write to {}", path.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup made of plain files in a temp dir: what the daemon writes
    /// can be read back, what it reads can be staged.
    fn fake() -> (tempfile::TempDir, Cgroup) {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = Cgroup::create(dir.path().join("web.service")).unwrap();
        for file in [
            "memory.max",
            "memory.swap.max",
            "memory.oom.group",
            "cpu.max",
            "pids.max",
            "io.weight",
        ] {
            fs::write(cgroup.dir().join(file), "").unwrap();
        }
        (dir, cgroup)
    }

    fn read(cgroup: &Cgroup, file: &str) -> String {
        fs::read_to_string(cgroup.dir().join(file)).unwrap()
    }

    #[test]
    fn limits_are_written_in_the_kernels_formats() {
        let (_dir, cgroup) = fake();
        let limits = CgroupLimits {
            memory_max: Some(64 << 20),
            swap_max: Some(0),
            oom_group: true,
            cpu_max: Some((50_000, 100_000)),
            pids_max: Some(32),
            io_weight: Some(200),
        };
        assert!(cgroup.apply_limits(&limits).is_empty());
        assert_eq!(read(&cgroup, "memory.max"), "67108864");
        assert_eq!(read(&cgroup, "memory.swap.max"), "0");
        assert_eq!(read(&cgroup, "memory.oom.group"), "1");
        assert_eq!(read(&cgroup, "cpu.max"), "50000 100000");
        assert_eq!(read(&cgroup, "pids.max"), "32");
        assert_eq!(read(&cgroup, "io.weight"), "default 200");
    }

    #[test]
    fn a_missing_controller_file_is_reported_with_its_config_key() {
        let (_dir, cgroup) = fake();
        fs::remove_file(cgroup.dir().join("pids.max")).unwrap();
        let failed = cgroup.apply_limits(&CgroupLimits {
            pids_max: Some(10),
            ..Default::default()
        });
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0.key, "limits.pids");
        assert_eq!(failed[0].0.controller, Controller::Pids);
        assert_eq!(failed[0].1.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn accounting_files_are_parsed() {
        let (_dir, cgroup) = fake();
        fs::write(
            cgroup.dir().join("cpu.stat"),
            "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n",
        )
        .unwrap();
        fs::write(cgroup.dir().join("memory.current"), "8388608\n").unwrap();
        fs::write(
            cgroup.dir().join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 1\n",
        )
        .unwrap();
        assert_eq!(cgroup.cpu_usage_usec().unwrap(), 1_234_567);
        assert_eq!(cgroup.memory_current(), Some(8 << 20));
        assert_eq!(cgroup.oom_kills(), 1);
        fs::remove_file(cgroup.dir().join("memory.events")).unwrap();
        assert_eq!(cgroup.oom_kills(), 0);
    }

    #[test]
    fn populated_and_members_come_from_the_core_files() {
        let (_dir, cgroup) = fake();
        fs::write(
            cgroup.dir().join("cgroup.events"),
            "populated 1\nfrozen 0\n",
        )
        .unwrap();
        fs::write(cgroup.dir().join("cgroup.procs"), "41\n42\n").unwrap();
        assert!(cgroup.is_populated());
        assert_eq!(cgroup.members().unwrap(), vec![41, 42]);
        fs::write(
            cgroup.dir().join("cgroup.events"),
            "populated 0\nfrozen 0\n",
        )
        .unwrap();
        assert!(!cgroup.is_populated());
        let gone = Cgroup::at(cgroup.dir().join("removed"));
        assert!(!gone.is_populated());
        assert!(gone.members().unwrap().is_empty());
    }

    #[test]
    fn files_are_opened_relative_to_the_open_parent() {
        let top = tempfile::tempdir().unwrap();
        let parent = Arc::new(Cgroup::at(top.path().to_path_buf()).open_dir().unwrap());
        let cgroup = Cgroup::create_in(&parent, top.path().join("api.service")).unwrap();
        fs::write(cgroup.dir().join("cgroup.procs"), "7\n").unwrap();
        fs::write(cgroup.dir().join("cgroup.events"), "populated 1\n").unwrap();
        // Moved away, the parent's path no longer leads there: only the
        // open parent does.
        let moved = tempfile::tempdir().unwrap();
        fs::rename(top.path(), moved.path().join("elsewhere")).unwrap();
        assert_eq!(cgroup.members().unwrap(), vec![7]);
        assert!(cgroup.is_populated());
        assert_eq!(
            cgroup.member_list().unwrap().unwrap().read().unwrap(),
            vec![7]
        );
        fs::rename(moved.path().join("elsewhere"), top.path()).unwrap();
    }

    #[test]
    fn a_member_list_longer_than_one_read_is_read_whole() {
        let (_dir, cgroup) = fake();
        let pids: Vec<i32> = (1_000_000..1_002_000).collect();
        let text: String = pids.iter().map(|pid| format!("{pid}\n")).collect();
        assert!(text.len() > 2 * 4096);
        fs::write(cgroup.dir().join("cgroup.procs"), text).unwrap();
        assert_eq!(cgroup.members().unwrap(), pids);
        let list = cgroup.member_list().unwrap().unwrap();
        assert!(!list.is_empty());
        fs::write(cgroup.dir().join("cgroup.procs"), "").unwrap();
        assert!(list.is_empty(), "read again through the same descriptor");
    }

    #[test]
    fn controller_lists_skip_what_kepler_does_not_use() {
        assert_eq!(
            parse_controllers("cpuset cpu io memory hugetlb pids rdma misc\n"),
            vec![
                Controller::Cpu,
                Controller::Io,
                Controller::Memory,
                Controller::Pids
            ]
        );
        assert!(parse_controllers("hugetlb\n").is_empty());
    }
}
