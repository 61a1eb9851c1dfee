//! `kepler import FILE [-o kepler.yaml] [--force] [--from FORMAT]`: writes a
//! kepler.yaml from another tool's process file and reports on stderr what
//! each entry became and what was left out. No daemon is involved.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::bridges::import::{detect, import, model, read_text};
use crate::cli::ImportArgs;

pub fn run(args: ImportArgs) -> Result<ExitCode> {
    let text = read_text(&args.source)?;
    let format = match args.from {
        Some(format) => format,
        None => detect(&args.source, &text)?,
    };
    let to_stdout = args.output.as_os_str() == "-";
    let output_dir = if to_stdout {
        Path::new(".")
    } else {
        match args.output.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    };
    if !to_stdout && args.output.exists() && !args.force {
        bail!(
            "{} already exists; use --force to replace it, or -o to write elsewhere (-o - for stdout)",
            args.output.display()
        );
    }
    let imported = import(&args.source, format, output_dir)?;
    let yaml = model::render(&imported.config, &imported.header);
    let target = if to_stdout {
        std::io::stdout().lock().write_all(yaml.as_bytes())?;
        "stdout".to_owned()
    } else {
        std::fs::write(&args.output, &yaml)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        args.output.display().to_string()
    };
    eprint!(
        "kepler import: {} ({format}) -> {target}\n{}",
        args.source.display(),
        imported.report
    );
    if !to_stdout {
        eprintln!(
            "next: `kepler -f {} check`, then `kepler -f {0} start`",
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
