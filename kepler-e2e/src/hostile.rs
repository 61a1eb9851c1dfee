//! What the security tests need to play a hostile member: files the member
//! owns, a shell as the member, and requests sent over the wire with a path
//! exactly as the member chooses (through the `raw_request` helper binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Kepler, Run, TestUser};

impl Kepler {
    /// Writes `contents` to `name` inside the scratch directory as a file
    /// `user` owns: a config belongs to the owner of its file.
    pub fn write_as(&self, user: &TestUser, name: &str, contents: &str) -> PathBuf {
        let path = self.write(name, contents);
        std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
        path
    }

    /// Runs `sh -c script` in the scratch directory as `user` (root when
    /// `None`): how the tests play a hostile member at a shell.
    pub fn sh_as(&self, user: Option<&TestUser>, script: &str) -> Run {
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", script])
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some(user) = user {
            user.apply(&mut command);
        }
        let output = command.output().expect("run sh");
        Run::from_output(format!("sh -c {script:?}"), output)
    }

    /// Sends one request with `path` exactly as given, bypassing the CLI's
    /// checks, as `user` (root when `None`), through the `raw_request`
    /// helper binary at `exe` (`env!("CARGO_BIN_EXE_raw_request")`).
    pub fn raw_request(&self, exe: &str, user: Option<&TestUser>, verb: &str, path: &Path) -> Run {
        let mut command = Command::new(exe);
        command
            .arg(self.socket_path())
            .arg(verb)
            .arg(path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some(user) = user {
            user.apply(&mut command);
        }
        let output = command.output().expect("run raw_request");
        Run::from_output(format!("raw_request {verb} {}", path.display()), output)
    }
}
