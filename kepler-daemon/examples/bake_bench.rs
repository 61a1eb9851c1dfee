//! Times `config::bake` in-process on a config file: `bake_bench FILE [RUNS]`
//! prints the median, min and max of RUNS bakes (default 30). With
//! `--print`, prints the baked snapshot instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kepler_daemon::config::{bake, render_snapshot};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(file) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: bake_bench FILE [RUNS] [--print]");
        std::process::exit(2);
    };
    // A fixed captured environment, as the CLI would send.
    let sys_env: BTreeMap<String, String> = [("HOME", "/home/bench"), ("PATH", "/usr/bin:/bin")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if args.iter().any(|a| a == "--print") {
        match bake(file.as_ref(), &sys_env) {
            Ok(baked) => print!("{}", render_snapshot(&baked.config)),
            Err(errors) => {
                eprintln!("{errors}");
                std::process::exit(1);
            }
        }
        return;
    }
    let runs: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let baked = bake(file.as_ref(), &sys_env).unwrap_or_else(|errors| {
                eprintln!("{errors}");
                std::process::exit(1);
            });
            let elapsed = start.elapsed();
            std::hint::black_box(baked);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "bake {file}: median {:.2?}, min {:.2?}, max {:.2?} over {runs} runs",
        times[runs / 2],
        times[0],
        times[runs - 1]
    );
}
