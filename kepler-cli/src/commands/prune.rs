//! `kepler prune [--force] [--dry-run]`: remove the state of configs that
//! have nothing running, one line per config the daemon considered.

use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{PrunedConfig, Request, Response};

use crate::cli::PruneArgs;
use crate::client::Client;
use crate::terminal_text::TextMode;

pub async fn run(args: PruneArgs) -> Result<ExitCode> {
    let mut client = Client::connect().await?;
    let request = Request::Prune {
        force: args.force,
        dry_run: args.dry_run,
    };
    let pruned = match client.request(request).await? {
        Response::Pruned(pruned) => pruned,
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    // Paths name other users' files: shown, not sent, on a terminal.
    let mode = TextMode::for_stdout(false);
    for line in render_pruned(&pruned, args.dry_run).lines() {
        println!("{}", mode.show(line));
    }
    Ok(ExitCode::SUCCESS)
}

/// In a dry run, `removed` means "would be removed".
pub fn render_pruned(pruned: &[PrunedConfig], dry_run: bool) -> String {
    if pruned.is_empty() {
        return "nothing to prune".into();
    }
    pruned
        .iter()
        .map(|entry| {
            let (path, state_dir) = (entry.path.display(), entry.state_dir.display());
            match (entry.removed, dry_run) {
                (true, false) => format!("removed {path} ({state_dir})"),
                (true, true) => format!("would remove {path} ({state_dir})"),
                (false, _) => format!("kept {path}: {}", entry.note),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, removed: bool, note: &str) -> PrunedConfig {
        PrunedConfig {
            path: path.into(),
            state_dir: format!("/var/lib/kepler/configs/{}", path.len()).into(),
            note: note.into(),
            removed,
        }
    }

    #[test]
    fn nothing_to_prune_says_so() {
        assert_eq!(render_pruned(&[], false), "nothing to prune");
        assert_eq!(render_pruned(&[], true), "nothing to prune");
    }

    #[test]
    fn removed_and_kept_configs_get_a_line_each() {
        let pruned = [
            entry("/gone/kepler.yaml", true, "source file is gone"),
            entry("/srv/app/kepler.yaml", false, "services are running"),
        ];
        assert_eq!(
            render_pruned(&pruned, false),
            "removed /gone/kepler.yaml (/var/lib/kepler/configs/17)\n\
             kept /srv/app/kepler.yaml: services are running"
        );
    }

    #[test]
    fn a_dry_run_says_what_would_be_removed() {
        let pruned = [entry("/gone/kepler.yaml", true, "source file is gone")];
        assert_eq!(
            render_pruned(&pruned, true),
            "would remove /gone/kepler.yaml (/var/lib/kepler/configs/17)"
        );
    }
}
