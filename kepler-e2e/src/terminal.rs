//! A real terminal for tests of what the CLI draws on one: a tmux server
//! of the test's own (its socket in the scratch dir), one pane running a
//! shell, keys typed into it and the screen read back with `capture-pane`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::{Kepler, DEADLINE};

pub struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// A `width`x`height` terminal whose shell runs in the scratch dir with
    /// `kepler` on its PATH and the daemon's state dir set, colour allowed.
    pub fn open(kepler: &Kepler, width: u16, height: u16) -> Terminal {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "tmux is missing: run `sudo scripts/test-env`, which installs it"
        );
        let terminal = Terminal {
            socket: kepler.dir().join("tmux.sock"),
        };
        let path = format!(
            "{}:{}",
            kepler.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let state = format!(
            "{}={}",
            kepler_protocol::STATE_DIR_ENV,
            kepler.state_dir().display()
        );
        // The environment goes on the shell's command line: tmux's own
        // session environment does not reach the first process reliably.
        let shell = format!("env -u NO_COLOR PATH='{path}' '{state}' TERM=xterm-256color sh");
        terminal.tmux(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "-c",
            &kepler.dir().display().to_string(),
            &shell,
        ]);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `line` and Enter into the shell.
    pub fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", line]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    /// What the screen shows now, one string per row, without trailing blanks.
    pub fn screen(&self) -> Vec<String> {
        self.tmux(&["capture-pane", "-p", "-t", "0"])
            .lines()
            .map(|row| row.trim_end().to_string())
            .collect()
    }

    /// Waits until the screen satisfies `condition`; returns it.
    pub fn wait_for_screen(
        &self,
        what: &str,
        condition: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for the terminal to show {what}; it shows:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}
