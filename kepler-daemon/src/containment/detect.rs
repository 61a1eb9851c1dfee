//! Finding the cgroup v2 hierarchy and the daemon's place in it, from
//! `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! Two layouts are common: the unified one (cgroup2 at `/sys/fs/cgroup`,
//! every controller on it) and the hybrid one (cgroup2 at
//! `/sys/fs/cgroup/unified` with no controllers, v1 hierarchies beside it).
//! Parsing is kept apart from reading so it can be tested on sample text.

use std::path::{Path, PathBuf};

use super::cgroup::Controller;

/// A mounted cgroup2 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/unified`.
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (`/` unless bind-mounted
    /// from inside the hierarchy), relative to our cgroup namespace.
    pub root: PathBuf,
}

/// The cgroup2 mount the daemon should use: the unified layout's
/// `/sys/fs/cgroup` first, then the hybrid layout's
/// `/sys/fs/cgroup/unified`, then any other.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    let mounts: Vec<Cgroup2Mount> = mountinfo.lines().filter_map(parse_mount_line).collect();
    let preferred = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
    preferred
        .iter()
        .find_map(|want| mounts.iter().find(|m| m.mount_point == Path::new(want)))
        .or_else(|| mounts.first())
        .cloned()
}

/// A mountinfo line: `id parent major:minor root mount_point options
/// [optional fields...] - fstype source super_options`.
fn parse_mount_line(line: &str) -> Option<Cgroup2Mount> {
    let (before, after) = line.split_once(" - ")?;
    if after.split_whitespace().next()? != "cgroup2" {
        return None;
    }
    let fields: Vec<&str> = before.split_whitespace().collect();
    Some(Cgroup2Mount {
        root: PathBuf::from(unescape(fields.get(3)?)),
        mount_point: PathBuf::from(unescape(fields.get(4)?)),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        match octal.and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The daemon's cgroup in the v2 hierarchy (the `0::<path>` line of
/// `/proc/self/cgroup`).
pub fn v2_cgroup_path(proc_cgroup: &str) -> Option<PathBuf> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| PathBuf::from(path.trim_end_matches(" (deleted)")))
}

/// Controllers bound to a cgroup v1 hierarchy (`N:memory:/...` lines), for
/// saying why they are missing from v2.
pub fn v1_controllers(proc_cgroup: &str) -> Vec<Controller> {
    proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, names) = (parts.next()?, parts.next()?);
            (id != "0").then_some(names)
        })
        .flat_map(|names| names.split(','))
        .filter_map(|name| Controller::ALL.into_iter().find(|c| c.name() == name))
        .collect()
}

/// The directory of `cgroup` (a path as `/proc/self/cgroup` gives it) under
/// `mount`, or `None` when the mount does not show it.
pub fn cgroup_dir(mount: &Cgroup2Mount, cgroup: &Path) -> Option<PathBuf> {
    let relative = cgroup.strip_prefix(&mount.root).ok()?;
    if relative.as_os_str().is_empty() {
        return Some(mount.mount_point.clone());
    }
    Some(mount.mount_point.join(relative))
}

/// `kepler-<16 hex digits>`: this daemon's subtree, named after its state
/// directory so daemons on different state directories (tests run dozens
/// at once) never share one, and a daemon restarted on the same state
/// directory finds its predecessor's.
pub fn subtree_name(state_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("kepler-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 25 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
";

    const UNIFIED: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
99 30 0:26 / /mnt/other\\040cg rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_hybrid_layout_is_found_under_unified() {
        let mount = find_cgroup2_mount(HYBRID).unwrap();
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(mount.root, Path::new("/"));
    }

    #[test]
    fn the_unified_layout_is_preferred_over_other_mounts() {
        let mount = find_cgroup2_mount(UNIFIED).unwrap();
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cgroup"));
        let other = UNIFIED.lines().nth(2).unwrap();
        assert_eq!(
            parse_mount_line(other).unwrap().mount_point,
            Path::new("/mnt/other cg")
        );
    }

    #[test]
    fn a_v1_only_host_has_no_cgroup2_mount() {
        let v1_only: String = HYBRID.lines().filter(|l| !l.contains("cgroup2")).collect();
        assert_eq!(find_cgroup2_mount(&v1_only), None);
    }

    #[test]
    fn the_v2_line_of_proc_self_cgroup_gives_the_daemons_cgroup() {
        let hybrid = "9:name=systemd:/\n4:memory:/user.slice\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(v2_cgroup_path(hybrid), Some(PathBuf::from("/")));
        assert_eq!(
            v2_cgroup_path("0::/system.slice/kepler.service\n"),
            Some(PathBuf::from("/system.slice/kepler.service"))
        );
        assert_eq!(v2_cgroup_path("4:memory:/\n"), None);
        assert_eq!(
            v1_controllers(hybrid),
            vec![Controller::Memory, Controller::Cpu]
        );
    }

    #[test]
    fn a_cgroup_maps_to_a_directory_below_the_mount_root() {
        let mount = Cgroup2Mount {
            mount_point: "/sys/fs/cgroup".into(),
            root: "/".into(),
        };
        assert_eq!(
            cgroup_dir(&mount, Path::new("/system.slice/kepler.service")),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/kepler.service"))
        );
        let bound = Cgroup2Mount {
            mount_point: "/sys/fs/cgroup".into(),
            root: "/machine/c1".into(),
        };
        assert_eq!(
            cgroup_dir(&bound, Path::new("/machine/c1/app")),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(cgroup_dir(&bound, Path::new("/elsewhere")), None);
    }

    #[test]
    fn subtree_names_differ_per_state_directory() {
        let a = subtree_name(Path::new("/var/lib/kepler"));
        let b = subtree_name(Path::new("/tmp/kepler-e2e-1/state"));
        assert!(
            a.starts_with("kepler-") && a.len() == "kepler-".len() + 16,
            "{a}"
        );
        assert_ne!(a, b);
        assert_eq!(a, subtree_name(Path::new("/var/lib/kepler")));
    }
}
