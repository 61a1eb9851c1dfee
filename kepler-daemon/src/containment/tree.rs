//! The daemon's own subtree of the cgroup v2 hierarchy.
//!
//! ```text
//! <the daemon's cgroup at start>/          e.g. /system.slice/kepler.service
//! └── kepler-<hash of the state dir>/      the subtree, one per daemon instance
//!     ├── daemon/                          the daemon itself
//!     └── <config hash>/                   one per config
//!         ├── web.service/                 a service's processes
//!         ├── web.pre_start-7.hook/        one run of a hook
//!         ├── web.healthcheck-12.probe/    one command health probe
//!         └── _kepler.on_init-3.hook/      a global hook
//! ```
//!
//! cgroup v2 lets a cgroup hand controllers to its children only while it
//! holds no process itself ("no internal processes"), so the daemon leaves
//! the cgroup it was started in for the `daemon` leaf before enabling
//! controllers. At a clean exit it moves back and removes the subtree; after
//! a crash the next daemon on the same state directory finds the subtree
//! again by its name and kills what survived in it.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::cgroup::{Cgroup, Controller};
use super::detect;

/// Why a controller cannot be used for services.
pub type MissingControllers = BTreeMap<Controller, String>;

/// The subtree a daemon set up in a writable cgroup v2 hierarchy.
#[derive(Debug)]
pub struct CgroupTree {
    /// The cgroup the daemon was started in, where it returns at exit.
    parent: Cgroup,
    /// `<parent>/kepler-<hash>`.
    root: Cgroup,
    /// Controllers every config and service cgroup gets.
    controllers: Vec<Controller>,
    /// The rest of [`Controller::ALL`], with why each is missing.
    missing: MissingControllers,
    /// Enabled in the parent by this daemon, disabled again at exit if the
    /// parent would not take the daemon back otherwise.
    enabled_in_parent: Vec<Controller>,
}

/// Why the daemon runs without cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCgroups(pub String);

impl CgroupTree {
    /// Finds the hierarchy, creates the subtree, moves this process into
    /// its `daemon` leaf and enables what controllers it can.
    pub fn set_up(state_dir: &Path) -> Result<CgroupTree, NoCgroups> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|e| NoCgroups(format!("cannot read {path}: {e}")))
        };
        let mountinfo = read("/proc/self/mountinfo")?;
        let proc_cgroup = read("/proc/self/cgroup")?;
        let mount = detect::find_cgroup2_mount(&mountinfo).ok_or_else(|| {
            NoCgroups("no cgroup2 filesystem is mounted (a cgroup v1 only host)".into())
        })?;
        let own = detect::v2_cgroup_path(&proc_cgroup)
            .ok_or_else(|| NoCgroups("/proc/self/cgroup has no cgroup v2 entry (0::)".into()))?;
        let own_dir = detect::cgroup_dir(&mount, &own).ok_or_else(|| {
            NoCgroups(format!(
                "the daemon's cgroup {} is outside the cgroup2 mount at {}",
                own.display(),
                mount.mount_point.display()
            ))
        })?;
        let name = detect::subtree_name(state_dir);
        let parent_dir = parent_of_own(&own_dir, &name);
        let v1 = detect::v1_controllers(&proc_cgroup);
        Self::set_up_at(parent_dir, &name, &v1)
    }

    fn set_up_at(
        parent_dir: PathBuf,
        name: &str,
        v1: &[Controller],
    ) -> Result<CgroupTree, NoCgroups> {
        let parent = Cgroup::at(parent_dir);
        let created = |dir: PathBuf| {
            Cgroup::create(dir.clone())
                .map_err(|e| NoCgroups(format!("cannot create {}: {e}", dir.display())))
        };
        let root = created(parent.dir().join(name))?;
        let leaf = created(root.dir().join("daemon"))?;
        if let Err(e) = leaf.adopt(std::process::id()) {
            let _ = leaf.remove();
            let _ = root.remove();
            return Err(NoCgroups(format!(
                "cannot move the daemon into {}: {e}",
                leaf.dir().display()
            )));
        }
        let mut tree = CgroupTree {
            parent,
            root,
            controllers: Vec::new(),
            missing: MissingControllers::new(),
            enabled_in_parent: Vec::new(),
        };
        tree.enable_controllers(v1);
        Ok(tree)
    }

    /// Makes every controller the parent can give available to config and
    /// service cgroups; records why the others are not.
    fn enable_controllers(&mut self, v1: &[Controller]) {
        let offered = self.parent.controllers().unwrap_or_default();
        let delegated = self.parent.subtree_control().unwrap_or_default();
        for controller in Controller::ALL {
            if !offered.contains(&controller) {
                let why = if v1.contains(&controller) {
                    format!(
                        "the {controller} controller is attached to a cgroup v1 hierarchy, not \
                         to cgroup v2 (hybrid layout)"
                    )
                } else {
                    format!(
                        "the {controller} controller is not available in {} (not listed in its \
                         cgroup.controllers)",
                        self.parent.dir().display()
                    )
                };
                self.missing.insert(controller, why);
                continue;
            }
            if !delegated.contains(&controller) {
                if let Err(e) = self.parent.set_subtree_control(controller, true) {
                    self.missing.insert(
                        controller,
                        format!(
                            "cannot enable the {controller} controller in {}/cgroup.subtree_control: \
                             {e}{}",
                            self.parent.dir().display(),
                            if e.raw_os_error() == Some(libc::EBUSY) {
                                " (other processes share the cgroup the daemon was started in; \
                                 give the daemon a cgroup of its own, e.g. a systemd unit with \
                                 Delegate=yes)"
                            } else {
                                ""
                            }
                        ),
                    );
                    continue;
                }
                self.enabled_in_parent.push(controller);
            }
            match self.root.set_subtree_control(controller, true) {
                Ok(()) => self.controllers.push(controller),
                Err(e) => {
                    self.missing.insert(
                        controller,
                        format!(
                            "cannot enable the {controller} controller in {}: {e}",
                            self.root.dir().display()
                        ),
                    );
                }
            }
        }
    }

    /// A tree that was never set up, offering `controllers`, for tests of
    /// what depends on them.
    #[cfg(test)]
    pub(crate) fn fake(
        root: PathBuf,
        controllers: &[Controller],
        missing: MissingControllers,
    ) -> Self {
        CgroupTree {
            parent: Cgroup::at(root.join("..")),
            root: Cgroup::at(root),
            controllers: controllers.to_vec(),
            missing,
            enabled_in_parent: Vec::new(),
        }
    }

    /// `<subtree>`, e.g. `/sys/fs/cgroup/unified/kepler-0123456789abcdef`.
    pub fn root(&self) -> &Path {
        self.root.dir()
    }

    /// Controllers enabled for services.
    pub fn controllers(&self) -> &[Controller] {
        &self.controllers
    }

    pub fn missing(&self) -> &MissingControllers {
        &self.missing
    }

    /// The cgroup of the config whose state directory is `configs/<hash>`,
    /// created with this tree's controllers enabled for its children.
    pub fn config(&self, hash: &str) -> io::Result<ConfigCgroup> {
        let cgroup = Cgroup::create(self.root.dir().join(hash))?;
        for &controller in &self.controllers {
            cgroup.set_subtree_control(controller, true)?;
        }
        // Kept open for the config's life: its services' files are opened
        // relative to it.
        let open = cgroup.open_dir().map(Arc::new);
        if let Err(e) = &open {
            tracing::debug!(cgroup = %cgroup.dir().display(), "cannot open; using full paths: {e}");
        }
        Ok(ConfigCgroup {
            cgroup: Arc::new(cgroup),
            controllers: Arc::from(self.controllers.as_slice()),
            open: open.ok(),
        })
    }

    /// The cgroup of a config if a previous daemon left one, without
    /// creating it (for recovery).
    pub fn existing_config(&self, hash: &str) -> Option<Cgroup> {
        let dir = self.root.dir().join(hash);
        dir.is_dir().then(|| Cgroup::at(dir))
    }

    /// At a clean exit, once every service is stopped: removes what is
    /// empty, moves the daemon back where it started and removes the
    /// subtree. Anything still running (a process that survived SIGKILL)
    /// keeps its cgroup, and the subtree with it.
    pub fn tear_down(&self) {
        let mut clean = true;
        for child in self.root.children().unwrap_or_default() {
            if child.dir().file_name().is_some_and(|n| n == "daemon") {
                continue;
            }
            clean &= remove_tree(&child);
        }
        if !clean {
            tracing::warn!(
                cgroup = %self.root.dir().display(),
                "some cgroups still hold processes; leaving them for the next daemon"
            );
            return;
        }
        if let Err(e) = self.return_to_parent() {
            tracing::warn!(
                cgroup = %self.root.dir().display(),
                "cannot move the daemon back to {}, so its cgroup stays: {e}",
                self.parent.dir().display()
            );
            return;
        }
        let _ = Cgroup::at(self.root.dir().join("daemon")).remove();
        if let Err(e) = self.root.remove() {
            tracing::warn!(cgroup = %self.root.dir().display(), "cannot remove: {e}");
        }
    }

    /// A process may not join a cgroup that delegates controllers (the
    /// root of the hierarchy excepted), so if the parent refuses the daemon,
    /// what this daemon enabled there is disabled first (its own subtree's
    /// delegation before that, which the parent's depends on). A root that
    /// takes the daemon back keeps its controllers: others use them.
    fn return_to_parent(&self) -> io::Result<()> {
        match self.parent.adopt(std::process::id()) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY) && !self.enabled_in_parent.is_empty() =>
            {
                for &controller in &self.controllers {
                    self.root.set_subtree_control(controller, false)?;
                }
                for &controller in &self.enabled_in_parent {
                    self.parent.set_subtree_control(controller, false)?;
                }
                self.parent.adopt(std::process::id())
            }
            other => other,
        }
    }
}

/// Where the daemon's subtree goes: beside the `daemon` leaf of a
/// predecessor if this process was started inside one, else below its own
/// cgroup.
fn parent_of_own(own_dir: &Path, subtree: &str) -> PathBuf {
    let inside_own_leaf = own_dir.file_name().is_some_and(|n| n == "daemon")
        && own_dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == subtree);
    match own_dir.parent().and_then(Path::parent) {
        Some(grandparent) if inside_own_leaf => grandparent.to_path_buf(),
        _ => own_dir.to_path_buf(),
    }
}

/// Kills nothing: removes `cgroup` and its descendants if all are empty.
/// Returns whether it is gone.
pub fn remove_tree(cgroup: &Cgroup) -> bool {
    // Every child is tried, even after one that stays.
    let kept = cgroup
        .children()
        .unwrap_or_default()
        .iter()
        .filter(|child| !remove_tree(child))
        .count();
    let children_gone = kept == 0;
    children_gone && cgroup.remove().is_ok()
}

/// One config's cgroup, parent of the cgroups of its services, hooks and
/// probes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConfigCgroup {
    cgroup: Arc<Cgroup>,
    controllers: Arc<[Controller]>,
    /// Its directory, open (see [`Cgroup::create_in`]).
    open: Option<Arc<OwnedFd>>,
}

impl ConfigCgroup {
    pub fn dir(&self) -> &Path {
        self.cgroup.dir()
    }

    /// Controllers its children get.
    pub fn controllers(&self) -> &[Controller] {
        &self.controllers
    }

    /// `<service>.service`; an existing one (left by a process that
    /// survived SIGKILL) is reused.
    pub fn service(&self, service: &str) -> io::Result<Arc<Cgroup>> {
        self.child(format!("{service}.service"))
    }

    /// A fresh cgroup for one run of a hook; `service` is `None` for a
    /// global hook.
    pub fn hook(&self, service: Option<&str>, hook: &str) -> io::Result<Arc<Cgroup>> {
        let owner = service.unwrap_or("_kepler");
        self.child(format!("{owner}.{hook}-{}.hook", next_run()))
    }

    /// A fresh cgroup for one command health probe of `service`.
    pub fn probe(&self, service: &str) -> io::Result<Arc<Cgroup>> {
        self.child(format!("{service}.healthcheck-{}.probe", next_run()))
    }

    fn child(&self, name: String) -> io::Result<Arc<Cgroup>> {
        let dir = self.cgroup.dir().join(name);
        match &self.open {
            Some(open) => Cgroup::create_in(open, dir),
            None => Cgroup::create(dir),
        }
        .map(Arc::new)
    }

    /// A handle for tests and tools that build the tree themselves.
    pub fn at(dir: PathBuf, controllers: &[Controller]) -> ConfigCgroup {
        ConfigCgroup {
            cgroup: Arc::new(Cgroup::at(dir)),
            controllers: Arc::from(controllers),
            open: None,
        }
    }
}

/// Numbers hook and probe runs so that two runs never share a cgroup.
fn next_run() -> u64 {
    static RUNS: AtomicU64 = AtomicU64::new(1);
    RUNS.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_started_in_its_own_leaf_goes_beside_it() {
        let own = Path::new("/sys/fs/cgroup/system.slice/kepler.service");
        assert_eq!(parent_of_own(own, "kepler-ab"), own);
        let leaf = Path::new("/sys/fs/cgroup/system.slice/kepler.service/kepler-ab/daemon");
        assert_eq!(parent_of_own(leaf, "kepler-ab"), own);
        // Another instance's leaf is just a cgroup like any other.
        assert_eq!(
            parent_of_own(leaf, "kepler-cd"),
            Path::new("/sys/fs/cgroup/system.slice/kepler.service/kepler-ab/daemon")
        );
    }

    #[test]
    fn cgroup_names_say_what_runs_in_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConfigCgroup::at(dir.path().to_path_buf(), &[]);
        let service = config.service("web").unwrap();
        assert_eq!(service.dir(), dir.path().join("web.service"));
        let hook = config.hook(Some("web"), "pre_start").unwrap();
        let again = config.hook(Some("web"), "pre_start").unwrap();
        let name = |c: &Cgroup| c.dir().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(&hook).starts_with("web.pre_start-"), "{}", name(&hook));
        assert!(name(&hook).ends_with(".hook"));
        assert_ne!(hook.dir(), again.dir(), "two runs never share a cgroup");
        let global = config.hook(None, "on_init").unwrap();
        assert!(name(&global).starts_with("_kepler.on_init-"));
        let probe = config.probe("web").unwrap();
        assert!(name(&probe).starts_with("web.healthcheck-") && name(&probe).ends_with(".probe"));
    }

    /// A hierarchy of plain files: the parent offers `offered`, and the
    /// subtree's files exist so the daemon can "join" it.
    fn fake_hierarchy(offered: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("system.slice/kepler.service");
        let leaf = parent.join("kepler-ab/daemon");
        std::fs::create_dir_all(&leaf).unwrap();
        for (file, text) in [
            ("cgroup.controllers", offered),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
        ] {
            std::fs::write(parent.join(file), text).unwrap();
            std::fs::write(parent.join("kepler-ab").join(file), "").unwrap();
        }
        std::fs::write(leaf.join("cgroup.procs"), "").unwrap();
        (dir, parent)
    }

    #[test]
    fn controllers_the_parent_offers_are_enabled_and_the_others_explained() {
        let (_dir, parent) = fake_hierarchy("cpu memory hugetlb\n");
        let tree = CgroupTree::set_up_at(parent.clone(), "kepler-ab", &[Controller::Pids]).unwrap();
        assert_eq!(tree.root(), parent.join("kepler-ab"));
        assert_eq!(tree.controllers(), [Controller::Cpu, Controller::Memory]);
        assert_eq!(
            tree.enabled_in_parent,
            [Controller::Cpu, Controller::Memory],
            "the parent delegated nothing before"
        );
        let missing = tree.missing();
        assert!(
            missing[&Controller::Io].contains("not available in")
                && missing[&Controller::Io].contains("kepler.service"),
            "{}",
            missing[&Controller::Io]
        );
        assert!(
            missing[&Controller::Pids].contains("cgroup v1 hierarchy"),
            "{}",
            missing[&Controller::Pids]
        );
        // The daemon joined its leaf.
        let leaf = parent.join("kepler-ab/daemon/cgroup.procs");
        assert_eq!(
            std::fs::read_to_string(leaf).unwrap(),
            std::process::id().to_string()
        );
        let containment = super::super::Containment::Cgroups(tree);
        assert!(containment.controller(Controller::Memory).is_ok());
        assert!(containment.controller(Controller::Io).is_err());
        assert!(
            containment.describe().starts_with("cgroup v2 at ")
                && containment.describe().ends_with("kepler-ab")
        );
    }

    #[test]
    fn a_subtree_that_cannot_be_created_means_no_cgroups_and_says_why() {
        let (dir, _) = fake_hierarchy("");
        let missing_parent = dir.path().join("not/there");
        let err = CgroupTree::set_up_at(missing_parent, "kepler-ab", &[]).unwrap_err();
        assert!(err.0.starts_with("cannot create "), "{}", err.0);
        assert!(err.0.contains("not/there/kepler-ab"), "{}", err.0);
    }

    #[test]
    fn remove_tree_removes_empty_directories_depth_first() {
        let dir = tempfile::tempdir().unwrap();
        let top = Cgroup::create(dir.path().join("kepler-x")).unwrap();
        let config = Cgroup::create(top.dir().join("cfg")).unwrap();
        Cgroup::create(config.dir().join("a.service")).unwrap();
        assert!(remove_tree(&top));
        assert!(!top.dir().exists());
        // A directory that cannot be removed (here: it holds a file, as a
        // populated cgroup holds processes) keeps its ancestors.
        let top = Cgroup::create(dir.path().join("kepler-y")).unwrap();
        let busy = Cgroup::create(top.dir().join("b.service")).unwrap();
        std::fs::write(busy.dir().join("cgroup.procs"), "42\n").unwrap();
        assert!(!remove_tree(&top));
        assert!(busy.dir().exists());
    }
}
