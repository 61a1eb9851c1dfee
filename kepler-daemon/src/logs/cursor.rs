//! Server-side cursors, so a client can fetch a large log in pages.
//!
//! A cursor is small: the selection (services, hooks or not, a search's
//! window and pattern) and the timestamp of the last line handed out. Each
//! page reopens the streams and binary-searches to just after that
//! timestamp, so cursors survive rotations and clears and hold no file
//! descriptors between pages.
//! Cursors idle for [`CURSOR_IDLE`] are dropped (checked lazily whenever the
//! registry is used, no timer); at most [`MAX_CURSORS`] live per config, and
//! opening one more evicts the least recently used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kepler_protocol::LogBatch;

use super::dir::LogDir;
use super::filter::LineFilter;
use super::forward::{self, PageLimit, Window};
use super::{lock, LogError};

pub const CURSOR_IDLE: Duration = Duration::from_secs(60);
pub const MAX_CURSORS: usize = 64;
/// Bytes of line text a page stops at, well inside a frame whatever the
/// line lengths.
pub const PAGE_TEXT_BYTES: usize = 8 * 1024 * 1024;
const PAGE_LINES_RESERVED: usize = 64 * 1024;
const PAGE_TEXT_RESERVED: usize = 6 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogCursorId(pub u64);

/// One page of lines, oldest first, in the form they travel in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub lines: LogBatch,
    /// More lines were stored when the page was read; when false, asking
    /// again later returns lines written since.
    pub more: bool,
}

struct CursorState {
    services: Vec<String>,
    include_hooks: bool,
    /// A search's window and pattern; pages hold only the lines it keeps.
    filter: LineFilter,
    after: Option<u64>,
    /// Lines still to hand out, for a `--head N` or `--tail N` read.
    remaining: Option<usize>,
    last_used: Instant,
}

struct Table {
    next_id: u64,
    cursors: HashMap<u64, CursorState>,
}

pub struct CursorRegistry {
    dir: Arc<LogDir>,
    limit: usize,
    idle: Duration,
    table: Mutex<Table>,
}

impl CursorRegistry {
    pub fn new(dir: Arc<LogDir>) -> Self {
        Self::with_limits(dir, MAX_CURSORS, CURSOR_IDLE)
    }

    pub fn with_limits(dir: Arc<LogDir>, limit: usize, idle: Duration) -> Self {
        CursorRegistry {
            dir,
            limit: limit.max(1),
            idle,
            table: Mutex::new(Table {
                next_id: 1,
                cursors: HashMap::new(),
            }),
        }
    }

    /// A cursor at the start of the selected services' logs (empty: all).
    pub fn open(&self, services: &[String], include_hooks: bool) -> LogCursorId {
        self.open_at(services, include_hooks, Instant::now())
    }

    /// A cursor over at most `limit` lines (all: `None`) stamped after
    /// `after` (from the start: `None`).
    pub fn open_range(
        &self,
        services: &[String],
        include_hooks: bool,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> LogCursorId {
        self.open_search(
            services,
            include_hooks,
            &LineFilter::everything(),
            after,
            limit,
        )
    }

    /// [`open_range`](Self::open_range) over the lines `filter` keeps.
    pub fn open_search(
        &self,
        services: &[String],
        include_hooks: bool,
        filter: &LineFilter,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> LogCursorId {
        self.open_range_at(
            services,
            include_hooks,
            filter,
            after,
            limit,
            Instant::now(),
        )
    }

    /// [`open`](Self::open) at a given time (lets tests move the clock).
    pub fn open_at(&self, services: &[String], include_hooks: bool, now: Instant) -> LogCursorId {
        self.open_range_at(
            services,
            include_hooks,
            &LineFilter::everything(),
            None,
            None,
            now,
        )
    }

    fn open_range_at(
        &self,
        services: &[String],
        include_hooks: bool,
        filter: &LineFilter,
        after: Option<u64>,
        remaining: Option<usize>,
        now: Instant,
    ) -> LogCursorId {
        let mut table = lock(&self.table);
        self.expire(&mut table, now);
        if table.cursors.len() >= self.limit {
            let oldest = table
                .cursors
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                table.cursors.remove(&oldest);
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        table.cursors.insert(
            id,
            CursorState {
                services: services.to_vec(),
                include_hooks,
                filter: filter.clone(),
                after,
                remaining,
                last_used: now,
            },
        );
        LogCursorId(id)
    }

    /// The next `n` lines of cursor `id` (fewer once the page holds
    /// [`PAGE_TEXT_BYTES`]). Blocking (reads files).
    pub fn next_page(&self, id: LogCursorId, n: usize) -> Result<LogPage, LogError> {
        self.next_page_at(id, n, Instant::now())
    }

    /// [`next_page`](Self::next_page) at a given time.
    pub fn next_page_at(
        &self,
        id: LogCursorId,
        n: usize,
        now: Instant,
    ) -> Result<LogPage, LogError> {
        let (services, include_hooks, filter, after, n) = {
            let mut table = lock(&self.table);
            self.expire(&mut table, now);
            let cursor = table
                .cursors
                .get_mut(&id.0)
                .ok_or(LogError::UnknownCursor(id.0, self.idle))?;
            cursor.last_used = now;
            let n = cursor.remaining.map_or(n, |left| n.min(left));
            (
                cursor.services.clone(),
                cursor.include_hooks,
                cursor.filter.clone(),
                cursor.after,
                n,
            )
        };
        // Room for a page of typical lines up front: growing a multi-megabyte
        // buffer line by line showed in profiles.
        let mut lines = LogBatch::with_capacity(n.min(PAGE_LINES_RESERVED), PAGE_TEXT_RESERVED);
        let limit = PageLimit {
            lines: n,
            text_bytes: PAGE_TEXT_BYTES,
        };
        // Read without holding the table: other cursors stay usable.
        let window = Window {
            after,
            until: u64::MAX,
        };
        let page = forward::read_page(
            &self.dir,
            &services,
            include_hooks,
            &filter,
            |_, _| Some(window),
            &mut lines,
            limit,
        )?;
        let (last, mut more) = (page.last, page.more);
        if let Some(cursor) = lock(&self.table).cursors.get_mut(&id.0) {
            if let Some(last) = last {
                cursor.after = Some(last);
            }
            if let Some(left) = &mut cursor.remaining {
                *left -= lines.len();
                more &= *left > 0;
            }
        }
        Ok(LogPage { lines, more })
    }

    pub fn close(&self, id: LogCursorId) {
        lock(&self.table).cursors.remove(&id.0);
    }

    /// Live cursors (after dropping expired ones as of `now`).
    pub fn count_at(&self, now: Instant) -> usize {
        let mut table = lock(&self.table);
        self.expire(&mut table, now);
        table.cursors.len()
    }

    fn expire(&self, table: &mut Table, now: Instant) {
        let idle = self.idle;
        table
            .cursors
            .retain(|_, c| now.saturating_duration_since(c.last_used) < idle);
    }
}
