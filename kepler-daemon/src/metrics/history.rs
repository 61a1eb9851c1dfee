//! The usage history of one config: a fixed-size ring file.
//!
//! `configs/<hash>/metrics.ring` holds a 64-byte header and then
//! `capacity` rows, one per sampling tick. A row is the tick's time (8
//! bytes, milliseconds since the epoch; 0 marks a row never written) and,
//! for every service of the config in name order, 12 bytes: CPU in
//! hundredths of a percent (`u32::MAX` when it was not running), memory in
//! KiB and its restart count. A tick is one `pwrite` of its row and one of
//! the header's row count, so writes are batched per config, the file never
//! grows past `64 + capacity × (8 + 12 × services)` bytes, and the oldest
//! row is overwritten once the ring is full. Readers stream rows in chunks,
//! so a query costs memory per service, not per sample.
//!
//! A ring was chosen over an embedded database: the only queries are "rows
//! of a time window" and "the newest N rows", the cost per tick is two
//! writes whatever the history holds, and the size on disk is known in
//! advance. The header records a key of the service names and settings; a
//! config baked again with other services or settings starts a new history.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::config::MetricsConfig;

/// The file's name in the config's directory.
pub const HISTORY_FILE: &str = "metrics.ring";

const MAGIC: &[u8; 8] = b"KEPLRMH1";
const HEADER: u64 = 64;
const SLOT: usize = 12;
const NOT_RUNNING: u32 = u32::MAX;
/// Rows read at once when streaming.
const CHUNK_BYTES: usize = 1 << 20;

/// One service's sample in one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub restarts: u32,
}

/// The shape a history file must have for a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub services: usize,
    pub capacity: u64,
    pub key: u64,
}

impl Layout {
    /// The layout for `names` (the config's services, in name order) under
    /// `settings`; `None` when sampling is off.
    pub fn of<'a>(names: impl Iterator<Item = &'a str>, settings: &MetricsConfig) -> Option<Self> {
        if !settings.enabled() {
            return None;
        }
        let mut digest = Sha256::new();
        let mut services = 0;
        for name in names {
            digest.update(name.as_bytes());
            digest.update([0]);
            services += 1;
        }
        digest.update(settings.interval.0.as_millis().to_le_bytes());
        digest.update(settings.retention.0.as_millis().to_le_bytes());
        let hash = digest.finalize();
        let key = u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"));
        Some(Layout {
            services,
            capacity: settings.samples(),
            key,
        })
    }

    pub fn row_bytes(&self) -> usize {
        8 + SLOT * self.services
    }

    /// The largest the file can be.
    pub fn file_bytes(&self) -> u64 {
        HEADER + self.capacity * self.row_bytes() as u64
    }

    fn header(&self, head: u64) -> [u8; HEADER as usize] {
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&(self.services as u32).to_le_bytes());
        header[16..24].copy_from_slice(&self.capacity.to_le_bytes());
        header[24..32].copy_from_slice(&self.key.to_le_bytes());
        header[32..40].copy_from_slice(&head.to_le_bytes());
        header
    }

    /// Rows written so far, if `file` is a history of this layout.
    fn head_of(&self, file: &File) -> io::Result<Option<u64>> {
        let mut header = [0u8; HEADER as usize];
        match file.read_exact_at(&mut header, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let head = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
        let matches = header == self.header(head) && file.metadata()?.len() <= self.file_bytes();
        Ok(matches.then_some(head))
    }

    fn row_offset(&self, row: u64) -> u64 {
        HEADER + (row % self.capacity) * self.row_bytes() as u64
    }
}

/// Appends ticks to a config's history; owned by its actor.
pub struct HistoryWriter {
    file: File,
    layout: Layout,
    head: u64,
    row: Vec<u8>,
}

impl HistoryWriter {
    /// Continues the history in `file` if it has `layout`, else starts it
    /// anew (the config changed, or the file is not one of ours).
    pub fn open(file: File, layout: Layout) -> io::Result<Self> {
        let head = match layout.head_of(&file)? {
            Some(head) => head,
            None => {
                file.set_len(0)?;
                file.write_all_at(&layout.header(0), 0)?;
                0
            }
        };
        Ok(HistoryWriter {
            file,
            layout,
            head,
            row: Vec::with_capacity(layout.row_bytes()),
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Writes one tick: `samples` has one entry per service, in name order.
    pub fn append(&mut self, at_ms: u64, samples: &[Option<Sample>]) -> io::Result<()> {
        debug_assert_eq!(samples.len(), self.layout.services);
        self.row.clear();
        self.row.extend_from_slice(&at_ms.max(1).to_le_bytes());
        for sample in samples {
            let (cpu, memory, restarts) = match sample {
                Some(s) => (
                    ((s.cpu_percent * 100.0).round() as u64).min(NOT_RUNNING as u64 - 1) as u32,
                    (s.memory_bytes / 1024).min(u32::MAX as u64) as u32,
                    s.restarts,
                ),
                None => (NOT_RUNNING, 0, 0),
            };
            self.row.extend_from_slice(&cpu.to_le_bytes());
            self.row.extend_from_slice(&memory.to_le_bytes());
            self.row.extend_from_slice(&restarts.to_le_bytes());
        }
        self.file
            .write_all_at(&self.row, self.layout.row_offset(self.head))?;
        self.head += 1;
        self.file.write_all_at(&self.head.to_le_bytes(), 32)
    }
}

/// One row as a reader sees it.
pub struct Row<'a> {
    pub at_ms: u64,
    bytes: &'a [u8],
}

impl Row<'_> {
    /// The sample of the service at `index` (name order), if it ran then.
    pub fn sample(&self, index: usize) -> Option<Sample> {
        let slot = self.bytes.get(index * SLOT..(index + 1) * SLOT)?;
        let word = |i: usize| u32::from_le_bytes(slot[i..i + 4].try_into().expect("4 bytes"));
        let cpu = word(0);
        (cpu != NOT_RUNNING).then(|| Sample {
            cpu_percent: cpu as f64 / 100.0,
            memory_bytes: word(4) as u64 * 1024,
            restarts: word(8),
        })
    }
}

/// Calls `visit` with every row of `file` written at or after `since_ms`,
/// oldest first, starting no earlier than the newest `limit` rows. A file
/// of another layout (another config, or a history being restarted) has no
/// rows.
pub fn read_rows(
    file: &File,
    layout: Layout,
    since_ms: u64,
    limit: u64,
    mut visit: impl FnMut(&Row<'_>),
) -> io::Result<()> {
    let Some(head) = layout.head_of(file)? else {
        return Ok(());
    };
    let first = head.saturating_sub(layout.capacity.min(limit));
    let row_bytes = layout.row_bytes();
    let per_chunk = (CHUNK_BYTES / row_bytes).max(1) as u64;
    let mut buffer = Vec::new();
    let mut row = first;
    while row < head {
        // A chunk never wraps around the end of the ring.
        let slot = row % layout.capacity;
        let count = per_chunk.min(head - row).min(layout.capacity - slot);
        buffer.resize(count as usize * row_bytes, 0);
        let read = read_at_most(file, &mut buffer, layout.row_offset(row))?;
        for bytes in buffer[..read].chunks_exact(row_bytes) {
            let at_ms = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            if at_ms != 0 && at_ms >= since_ms {
                visit(&Row {
                    at_ms,
                    bytes: &bytes[8..],
                });
            }
        }
        row += count;
    }
    Ok(())
}

/// Fills as much of `buffer` as the file holds from `offset`.
fn read_at_most(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn layout(services: &[&str], interval_ms: u64, retention_ms: u64) -> Layout {
        let settings = MetricsConfig {
            interval: HumanDuration::from_millis(interval_ms),
            retention: HumanDuration::from_millis(retention_ms),
        };
        Layout::of(services.iter().copied(), &settings).unwrap()
    }

    fn rows(file: &File, layout: Layout, since: u64) -> Vec<(u64, Option<Sample>, Option<Sample>)> {
        let mut found = Vec::new();
        read_rows(file, layout, since, u64::MAX, |row| {
            found.push((row.at_ms, row.sample(0), row.sample(1)))
        })
        .unwrap();
        found
    }

    fn sample(cpu: f64, memory: u64) -> Option<Sample> {
        Some(Sample {
            cpu_percent: cpu,
            memory_bytes: memory,
            restarts: 0,
        })
    }

    #[test]
    fn the_ring_keeps_the_newest_rows_and_never_grows() {
        let file = tempfile::tempfile().unwrap();
        let layout = layout(&["db", "web"], 100, 300);
        assert_eq!(layout.capacity, 4);
        let mut writer = HistoryWriter::open(file.try_clone().unwrap(), layout).unwrap();
        for tick in 1..=10u64 {
            writer
                .append(tick * 100, &[sample(tick as f64, tick << 20), None])
                .unwrap();
        }
        let found = rows(&file, layout, 0);
        let times: Vec<u64> = found.iter().map(|r| r.0).collect();
        assert_eq!(times, [700, 800, 900, 1000]);
        assert_eq!(found[3].1, sample(10.0, 10 << 20));
        assert_eq!(found[3].2, None);
        assert_eq!(file.metadata().unwrap().len(), layout.file_bytes());
        // A window leaves the older rows out.
        assert_eq!(rows(&file, layout, 850).len(), 2);
    }

    #[test]
    fn a_history_continues_after_reopening_and_restarts_for_another_config() {
        let file = tempfile::tempfile().unwrap();
        let first = layout(&["web"], 100, 1000);
        let mut writer = HistoryWriter::open(file.try_clone().unwrap(), first).unwrap();
        writer.append(5, &[sample(1.5, 4096)]).unwrap();
        drop(writer);
        let mut writer = HistoryWriter::open(file.try_clone().unwrap(), first).unwrap();
        writer.append(6, &[sample(2.0, 8192)]).unwrap();
        let mut seen = Vec::new();
        read_rows(&file, first, 0, u64::MAX, |row| {
            seen.push(row.sample(0).unwrap().cpu_percent)
        })
        .unwrap();
        assert_eq!(seen, [1.5, 2.0]);

        let other = layout(&["web", "worker"], 100, 1000);
        let mut none = 0;
        read_rows(&file, other, 0, u64::MAX, |_| none += 1).unwrap();
        assert_eq!(none, 0, "another layout reads nothing");
        HistoryWriter::open(file.try_clone().unwrap(), other).unwrap();
        assert_eq!(rows(&file, other, 0).len(), 0);
        assert_eq!(file.metadata().unwrap().len(), HEADER);
    }

    #[test]
    fn only_the_newest_rows_are_read_when_limited() {
        let file = tempfile::tempfile().unwrap();
        let layout = layout(&["web"], 100, 10_000);
        let mut writer = HistoryWriter::open(file.try_clone().unwrap(), layout).unwrap();
        for tick in 1..=20u64 {
            writer.append(tick, &[sample(0.0, 0)]).unwrap();
        }
        let mut times = Vec::new();
        read_rows(&file, layout, 0, 3, |row| times.push(row.at_ms)).unwrap();
        assert_eq!(times, [18, 19, 20]);
    }
}
