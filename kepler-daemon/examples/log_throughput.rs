//! Measures the log store: a writer thread pushes 1,000,000 lines of 90 bytes
//! into a pipe as fast as it can while a pump stores them, with buffer_size 0
//! and 16384; then `tail 100` and `read_all` of the resulting file.
//!
//! Run: `cargo run --release -p kepler-daemon --example log_throughput [lines] [runs]`
//! Prints the median of each figure over the runs (default 5): wall time, and
//! in brackets the process's CPU time (user + sys, all threads, the pipe
//! writer included), which stays meaningful on a loaded machine.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use kepler_daemon::logs::{self, LogSettings, LogStore, Origin, Stream};
use tokio::net::unix::pipe;

const LINE_LEN: usize = 90;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let lines: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let payload = make_lines(lines);
    let rt = tokio::runtime::Runtime::new()?;

    for buffer_size in [0, 16384] {
        let mut pump_times = Vec::new();
        let mut tail_times = Vec::new();
        let mut read_all_times = Vec::new();
        let (mut pump_cpu, mut tail_cpu, mut read_all_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let dir = tempfile::tempdir()?;
            let settings = LogSettings {
                buffer_size,
                ..LogSettings::default()
            };
            let (started, cpu) = (Instant::now(), cpu_time());
            let report = rt.block_on(pump_once(dir.path(), &payload, &settings))?;
            pump_times.push(started.elapsed());
            pump_cpu.push(cpu_time() - cpu);
            assert_eq!(report.lines as usize, lines, "every line stored");

            let log_dir = logs::LogDir::open(dir.path())?;
            let (started, cpu) = (Instant::now(), cpu_time());
            let tail = logs::tail(&log_dir, &[], 100, true)?;
            tail_times.push(started.elapsed());
            tail_cpu.push(cpu_time() - cpu);
            assert_eq!(tail.len(), 100.min(lines));

            let (started, cpu) = (Instant::now(), cpu_time());
            let mut out = BufWriter::with_capacity(1 << 20, File::create("/dev/null")?);
            let mut count = 0;
            for line in logs::read_all(&log_dir, &[], true)? {
                out.write_all(&line.bytes)?;
                out.write_all(b"\n")?;
                count += 1;
            }
            out.flush()?;
            read_all_times.push(started.elapsed());
            read_all_cpu.push(cpu_time() - cpu);
            assert_eq!(count, lines, "read_all returns every line");
        }
        println!(
            "buffer_size {buffer_size:>5}: {lines} lines pumped to disk {:>6.1} ms [cpu {:>6.1}] | tail 100 {:>5.3} ms [cpu {:>5.3}] | read_all {:>6.1} ms [cpu {:>6.1}]  (median of {runs})",
            ms(median(&mut pump_times)),
            ms(median(&mut pump_cpu)),
            ms(median(&mut tail_times)),
            ms(median(&mut tail_cpu)),
            ms(median(&mut read_all_times)),
            ms(median(&mut read_all_cpu)),
        );
    }
    Ok(())
}

/// Writes `payload` into a fresh pipe from a thread and pumps it until EOF.
async fn pump_once(
    dir: &Path,
    payload: &[u8],
    settings: &LogSettings,
) -> Result<logs::PumpReport, Box<dyn std::error::Error>> {
    let store = LogStore::open(dir)?;
    let (read_end, write_end) = pipe_pair()?;
    let receiver = pipe::Receiver::from_owned_fd(read_end)?;
    let sink = store.sink("bench", Stream::Stdout, Origin::Service, settings);
    let payload = payload.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut file = File::from(write_end);
        for chunk in payload.chunks(64 * 1024) {
            file.write_all(chunk)?;
        }
        Ok(())
    });
    let report = logs::pump(receiver, sink).await;
    writer.join().map_err(|_| "writer thread panicked")??;
    Ok(report)
}

fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `count` numbered lines of exactly LINE_LEN bytes with their newline.
fn make_lines(count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * LINE_LEN);
    for i in 0..count {
        let start = out.len();
        write!(out, "line {i:09} ").expect("write to Vec");
        out.resize(start + LINE_LEN - 1, b'x');
        out.push(b'\n');
    }
    out
}

/// CPU time of the whole process so far (user + sys).
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
