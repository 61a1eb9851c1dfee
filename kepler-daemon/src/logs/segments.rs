//! Which streams a log directory holds, and a consistent view of one
//! stream's segments for a reader.
//!
//! A writer rotates by renaming the current segment over the previous one
//! and starting a new current segment. A reader opens the current segment,
//! then the previous one, then checks that the current name still points at
//! the file it opened. If it does, no rotation came in between, so the pair
//! it holds is the previous and current segment of one moment, and keeps
//! being readable as such (renames do not disturb open files). If not, it
//! tries again; rotations happen once per `max_size / 2` bytes, so a retry
//! is rare and a second one rarer still.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;

use super::dir::{file_id, LogDir};
use super::record::{self, Segment};
use super::{LogError, Stream};

/// Above this many streams, a read over them holds one stream's files at a
/// time instead of all of them (a merge holds two descriptors and a block
/// per stream: for ten thousand services, more than a daemon may have open).
pub(crate) const MERGE_STREAMS: usize = 256;

/// Attempts at a consistent view before settling for the current segment.
const OPEN_ATTEMPTS: usize = 8;

/// One stream's files, oldest first.
pub(crate) struct StreamFiles {
    pub(crate) service: String,
    pub(crate) stream: Stream,
    /// `[previous, current]` where they exist.
    pub(crate) files: Vec<File>,
}

/// The streams stored in `dir` as (service, stream), sorted.
pub fn log_files(dir: &LogDir) -> Result<Vec<(String, Stream)>, LogError> {
    let names = dir.names().map_err(|e| super::io_error(dir.path())(e))?;
    let streams: BTreeSet<(String, Stream)> = names
        .iter()
        .filter_map(|name| record::parse_file_name(name))
        .map(|(service, stream, _)| (service.to_string(), stream))
        .collect();
    Ok(streams.into_iter().collect())
}

/// The streams of the selected services (empty: all).
pub(crate) fn select(dir: &LogDir, services: &[String]) -> Result<Vec<(String, Stream)>, LogError> {
    Ok(log_files(dir)?
        .into_iter()
        .filter(|(service, _)| services.is_empty() || services.contains(service))
        .collect())
}

/// Opens the segments of one stream as they were at one moment.
pub(crate) fn open_stream(
    dir: &LogDir,
    service: &str,
    stream: Stream,
) -> Result<StreamFiles, LogError> {
    let current_name = record::file_name(service, stream, Segment::Current);
    let previous_name = record::file_name(service, stream, Segment::Previous);
    let (Some(current_name), Some(previous_name)) = (current_name, previous_name) else {
        return Ok(StreamFiles {
            service: service.to_string(),
            stream,
            files: Vec::new(),
        });
    };
    let err = |name: &str| {
        let path = dir.display_path(name);
        move |e: io::Error| LogError::Io { path, source: e }
    };
    let mut files = Vec::with_capacity(2);
    for attempt in 1..=OPEN_ATTEMPTS {
        files.clear();
        let current = dir.open_read(&current_name).map_err(err(&current_name))?;
        let current_id = current
            .as_ref()
            .map(file_id)
            .transpose()
            .map_err(err(&current_name))?;
        if attempt == OPEN_ATTEMPTS {
            // Rotating without pause: the current segment alone is consistent.
            files.extend(current);
            break;
        }
        let previous = dir.open_read(&previous_name).map_err(err(&previous_name))?;
        let now = dir.id_of(&current_name).map_err(err(&current_name))?;
        if now != current_id {
            continue;
        }
        if let Some(previous) = previous {
            let previous_id = file_id(&previous).map_err(err(&previous_name))?;
            if Some(previous_id) != current_id {
                files.push(previous);
            }
        }
        files.extend(current);
        break;
    }
    Ok(StreamFiles {
        service: service.to_string(),
        stream,
        files,
    })
}
