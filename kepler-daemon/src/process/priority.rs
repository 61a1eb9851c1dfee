//! The daemon's CPU priority: ahead of its services, which keep their own.
//!
//! Starting many services is a pipeline with one serial stage, the daemon
//! preparing and cloning each child, and many parallel ones, the children
//! loading their programs. At equal priority the scheduler shares the CPUs
//! fairly between the daemon and every child still loading, so the serial
//! stage waits for a CPU more than it runs: starting 10,000 services on two
//! cores, the actor's thread waited 3.6 s in the run queue and ran 2.9 s,
//! while a fifth to a third of the CPU time went unused. A busy machine
//! delays a stop or a `ps` the same way. So the daemon runs [`AHEAD`] nice
//! levels ahead of its services, as a system's own supervisor should, and
//! every child drops back before `exec` to the niceness the daemon was
//! started with, as if the daemon had never changed it.
//!
//! Two knobs are needed. Linux keeps a niceness per thread, which new
//! threads and children copy from their creator: the main thread raises
//! its own before any other thread exists. And with autogroup scheduling
//! (`kernel.sched_autogroup_enabled`), the kernel first shares the CPUs
//! between sessions, then between the threads of each; every service leads
//! a session of its own (`setsid`), so a thread's niceness counts only
//! against the daemon's own threads. A daemon that leads its own session
//! (detached, or started by systemd) therefore raises its session too. A
//! service's new session starts at niceness 0 whatever the daemon's is.

use std::io;
use std::sync::OnceLock;

/// How many nice levels the daemon runs ahead of its services.
pub const AHEAD: i32 = 10;

/// The niceness the daemon was started with, and gives its children; set
/// only once the daemon has raised its own.
static SERVICE_NICENESS: OnceLock<i32> = OnceLock::new();

/// What [`run_ahead_of_services`] did, for the log and `daemon status`.
static OUTCOME: OnceLock<String> = OnceLock::new();

/// The kernel's file of this process's session scheduling group.
const AUTOGROUP: &str = "/proc/self/autogroup";
const AUTOGROUP_ENABLED: &str = "/proc/sys/kernel/sched_autogroup_enabled";

/// The calling thread's niceness.
fn own_niceness() -> io::Result<i32> {
    // getpriority returns -1 both for an error and for niceness -1: only
    // errno tells them apart.
    nix::errno::Errno::clear();
    // SAFETY: getpriority on the calling thread has no preconditions.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(nice)
}

/// Raises the calling thread (the daemon's main thread, before any other
/// thread starts) [`AHEAD`] nice levels, at most to -20, and its session
/// when it leads one; remembers the niceness it had for the children.
/// Without `CAP_SYS_NICE` nothing changes and children need not drop back.
/// Returns what it did, in words, as `daemon status` shows it.
pub fn run_ahead_of_services() -> String {
    let outcome = match raise_own_thread() {
        Ok((daemon, services)) if daemon < services => format!(
            "niceness {daemon}, services {services}; {}",
            raise_own_session(daemon)
        ),
        Ok((daemon, _)) => format!("niceness {daemon}, as services (already at the lowest)"),
        Err(e) => format!("as services: cannot raise the daemon's priority ({e})"),
    };
    let _ = OUTCOME.set(outcome.clone());
    outcome
}

/// `(daemon, services)` niceness.
fn raise_own_thread() -> io::Result<(i32, i32)> {
    let services = own_niceness()?;
    let daemon = (services - AHEAD).max(-20);
    if daemon < services {
        // SAFETY: setpriority on the calling thread has no preconditions.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, daemon) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let _ = SERVICE_NICENESS.set(services);
    }
    Ok((daemon, services))
}

/// Gives the daemon's session the daemon's niceness where the kernel
/// schedules sessions as groups and the daemon leads its session (it
/// would otherwise raise whatever else runs in the terminal that started
/// it). Says what it did.
fn raise_own_session(nice: i32) -> String {
    match std::fs::read_to_string(AUTOGROUP_ENABLED) {
        Ok(text) if text.trim() == "1" => {}
        Ok(_) => return "no session groups (autogroup off)".into(),
        Err(_) => return "no session groups (no autogroup in this kernel)".into(),
    }
    // SAFETY: getsid and getpid have no preconditions.
    if unsafe { libc::getsid(0) != libc::getpid() } {
        return "session not raised (the daemon does not lead its session)".into();
    }
    match std::fs::write(AUTOGROUP, nice.to_string()) {
        Ok(()) => format!("session {nice}"),
        Err(e) => format!("session not raised ({e})"),
    }
}

/// What [`run_ahead_of_services`] did, as `daemon status` shows it.
pub fn describe() -> String {
    OUTCOME
        .get()
        .cloned()
        .unwrap_or_else(|| "as services (not raised)".into())
}

/// The niceness a child must drop back to before `exec`; `None` when the
/// daemon runs at the niceness it was started with.
pub fn service_niceness() -> Option<i32> {
    SERVICE_NICENESS.get().copied()
}

/// Drops the calling thread back to the services' niceness, so that a
/// program it `exec`s next (the upgrade's new daemon) starts where this
/// daemon started.
pub fn drop_back() {
    if let Some(nice) = service_niceness() {
        // SAFETY: setpriority on the calling thread has no preconditions;
        // raising a niceness cannot be refused.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    }
}
