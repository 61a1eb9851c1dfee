//! Reading what a process tree uses: cumulative CPU time and memory now.
//!
//! A cgroup answers from its own files: `usage_usec` of `cpu.stat` counts
//! every process that ever ran in it, and `memory.current` everything it
//! holds (page cache included). Without the memory controller its
//! members' resident sets are summed instead. A process group has no such
//! files: one pass over `/proc` sums the CPU time (with the reaped
//! children's) and resident set of every member, for all groups asked about
//! at once.
//!
//! Each service costs a few kernel-file reads, and `ps` waits for them all,
//! so a large sample is read on every CPU the daemon may use.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::thread;

use crate::containment::cgroup::read_small;
use crate::containment::{self, Controller};
use crate::process::Scope;

/// What one process tree uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used so far, user and system, in microseconds.
    pub cpu_usec: u64,
    /// Memory in use now, in bytes.
    pub memory_bytes: u64,
}

/// Usage of each scope, in order; `None` where it could not be read (the
/// scope has just gone).
pub fn sample(scopes: &[&Scope]) -> Vec<Option<Usage>> {
    let groups: Vec<i32> = scopes
        .iter()
        .filter_map(|scope| match scope {
            Scope::Group(pgid) => Some(*pgid),
            Scope::Cgroup { .. } => None,
        })
        .collect();
    let by_group = if groups.is_empty() {
        HashMap::new()
    } else {
        scan_groups(&groups)
    };
    flush_parents(scopes);
    // Without the memory controller there is no memory.current to try.
    let memory_controller = containment::current().has(Controller::Memory);
    map_on_all_cpus(scopes, |scope| match scope {
        Scope::Group(pgid) => by_group.get(pgid).copied(),
        Scope::Cgroup { cgroup, .. } => {
            let cpu_usec = cgroup.cpu_usage_usec().ok()?;
            let current = memory_controller.then(|| cgroup.memory_current()).flatten();
            let memory_bytes = current.unwrap_or_else(|| {
                let members = cgroup.members().unwrap_or_default();
                members.into_iter().filter_map(resident_bytes).sum()
            });
            Some(Usage {
                cpu_usec,
                memory_bytes,
            })
        }
    })
}

/// `read` of each item, in order, split over the CPUs the daemon may use
/// when there are enough items to pay for the threads. Items whose
/// thread cannot be started are read here; those of a helper thread that
/// panicked (a bug) give `None`.
fn map_on_all_cpus<T: Sync, R: Send>(
    items: &[T],
    read: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<Option<R>> {
    /// Below this many items per thread, starting one costs about what
    /// it saves.
    const MIN_PER_THREAD: usize = 32;
    let threads = cpus().min(items.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().map(&read).collect();
    }
    let read = &read;
    let mut chunks = items.chunks(items.len().div_ceil(threads));
    let own = chunks.next().unwrap_or_default();
    thread::scope(|scope| {
        let helpers: Vec<_> = chunks
            .map(|chunk| {
                let helper = thread::Builder::new()
                    .name("kepler-sample".into())
                    .spawn_scoped(scope, move || chunk.iter().map(read).collect::<Vec<_>>());
                (chunk, helper)
            })
            .collect();
        let mut all: Vec<Option<R>> = own.iter().map(read).collect();
        for (chunk, helper) in helpers {
            match helper.map(|helper| helper.join()) {
                Ok(Ok(read_there)) => all.extend(read_there),
                Ok(Err(_)) => all.extend(chunk.iter().map(|_| None)),
                Err(_) => all.extend(chunk.iter().map(read)),
            }
        }
        all
    })
}

fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Reads `cpu.stat` of each parent of the cgroups asked about, once: the
/// kernel then brings the whole subtree's counters up to date in one pass,
/// where reading each service's `cpu.stat` first would make each read
/// flush what every other cgroup had pending (seconds for ten thousand
/// services just started).
fn flush_parents(scopes: &[&Scope]) {
    let parents: std::collections::BTreeSet<&Path> = scopes
        .iter()
        .filter_map(|scope| scope.cgroup()?.dir().parent())
        .collect();
    if scopes.len() < 2 {
        return;
    }
    for parent in parents {
        let _ = read_small(&parent.join("cpu.stat"));
    }
}

/// [`sample`] of one scope.
pub fn sample_one(scope: &Scope) -> Option<Usage> {
    sample(&[scope]).pop().flatten()
}

/// Sums CPU time and resident memory of every process whose process group
/// is one of `groups`.
fn scan_groups(groups: &[i32]) -> HashMap<i32, Usage> {
    let mut totals: HashMap<i32, Usage> = groups.iter().map(|&g| (g, Usage::default())).collect();
    let Ok(entries) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    let pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    let processes = map_on_all_cpus(&pids, |pid| {
        parse_stat(&read_small(Path::new(&format!("/proc/{pid}/stat"))).ok()?)
    });
    for process in processes.into_iter().flatten() {
        if let Some(total) = totals.get_mut(&process.pgrp) {
            total.cpu_usec += process.cpu_ticks * usec_per_tick();
            total.memory_bytes += process.rss_pages * page_size();
        }
    }
    totals
}

/// The fields of `/proc/<pid>/stat` that usage needs.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    pgrp: i32,
    /// utime + stime + cutime + cstime.
    cpu_ticks: u64,
    rss_pages: u64,
}

fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may contain anything.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; pgrp is field 5, utime..cstime 14..17,
    // rss 24.
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    let ticks: i64 = (14..=17).map(field).sum::<Option<i64>>()?;
    Some(ProcStat {
        pgrp: field(5)? as i32,
        cpu_ticks: ticks.max(0) as u64,
        rss_pages: field(24)?.max(0) as u64,
    })
}

/// Resident memory of `pid` from `/proc/<pid>/statm`.
fn resident_bytes(pid: i32) -> Option<u64> {
    let statm = read_small(Path::new(&format!("/proc/{pid}/statm"))).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn usec_per_tick() -> u64 {
    static USEC: OnceLock<u64> = OnceLock::new();
    *USEC.get_or_init(|| {
        // SAFETY: sysconf takes an integer and touches no memory.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        1_000_000 / if ticks > 0 { ticks as u64 } else { 100 }
    })
}

fn page_size() -> u64 {
    static SIZE: OnceLock<u64> = OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf takes an integer and touches no memory.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            size as u64
        } else {
            4096
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_found_after_the_command_name() {
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 1 0 12345 10485760 512 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                pgrp: 4242,
                cpu_ticks: 310,
                rss_pages: 512
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_large_sample_keeps_its_order_across_threads() {
        let items: Vec<u32> = (0..1000).collect();
        let read = map_on_all_cpus(&items, |&n| Some(n * 2));
        let expected: Vec<Option<u32>> = items.iter().map(|&n| Some(n * 2)).collect();
        assert_eq!(read, expected);
        let small = map_on_all_cpus(&items[..3], |&n| (n != 1).then_some(n));
        assert_eq!(small, vec![Some(0), None, Some(2)]);
    }

    #[test]
    fn a_panicking_read_costs_its_items_not_the_caller() {
        if cpus() < 2 {
            eprintln!("SKIP: one CPU, so the sample is read on the caller's thread only");
            return;
        }
        let items: Vec<u32> = (0..1000).collect();
        // The last chunk is read on a helper thread.
        let read = map_on_all_cpus(&items, |&n| {
            assert!(n != 999, "a bug while reading");
            Some(n)
        });
        assert_eq!(read.len(), items.len());
        assert_eq!(read[0], Some(0));
        assert_eq!(read[999], None);
    }

    #[test]
    fn a_process_group_is_sampled_from_proc() {
        // This test process leads no group of its own, but it is in one.
        // SAFETY: getpgrp takes no arguments.
        let pgid = unsafe { libc::getpgrp() };
        let usage = sample_one(&Scope::Group(pgid)).expect("our own group");
        assert!(usage.memory_bytes > 0, "{usage:?}");
        let none = sample_one(&Scope::Group(i32::MAX)).expect("an empty total");
        assert_eq!(none, Usage::default());
    }
}
