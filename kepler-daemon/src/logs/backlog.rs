//! A follow's backlog: the newest lines already stored when the follow
//! began, handed out page by page, so a `--tail` of any length costs a page
//! of memory, not the whole tail.
//!
//! Opening it (after the follower subscribed) notes where the tail starts
//! and, per stream, the newest timestamp stored. Pages then read each stream
//! from just after the last line it gave up to that newest timestamp,
//! reopening the files each time, so no file is held open between pages
//! (a rotated-away segment is not kept alive by a slow client) and a
//! rotation in between costs nothing but the lines it dropped. Lines
//! written after the opening reach the client through the follower.

use std::sync::Arc;

use kepler_protocol::LogBatch;

use super::backward;
use super::dir::LogDir;
use super::filter::LineFilter;
use super::forward::{self, PageLimit, Window};
use super::{LogError, Stream};

pub struct Backlog {
    dir: Arc<LogDir>,
    services: Vec<String>,
    include_hooks: bool,
    /// The lines handed out are those it keeps.
    filter: LineFilter,
    /// The first timestamp of the tail; `None`: nothing to hand out.
    start: Option<u64>,
    /// Whether the tail held as many lines as were asked for.
    full: bool,
    /// Sorted by service, then stream (see [`mark_of`]).
    streams: Vec<StreamMark>,
}

struct StreamMark {
    service: String,
    stream: Stream,
    /// The last line handed out.
    after: Option<u64>,
    /// The newest line stored when the backlog was opened.
    until: u64,
}

impl Backlog {
    /// The newest `n` lines of the selected services that `filter` keeps,
    /// as of now. Blocking.
    pub(crate) fn open(
        dir: Arc<LogDir>,
        services: &[String],
        n: usize,
        include_hooks: bool,
        filter: &LineFilter,
    ) -> Result<Backlog, LogError> {
        let (start, count) = if n == 0 {
            (None, 0)
        } else {
            backward::tail_window(&dir, services, n, include_hooks, filter)?
        };
        let mut streams: Vec<StreamMark> = match start {
            None => Vec::new(),
            Some(_) => backward::newest_per_stream(&dir, services)?
                .into_iter()
                .map(|(service, stream, until)| StreamMark {
                    service,
                    stream,
                    after: None,
                    until,
                })
                .collect(),
        };
        streams.sort_unstable_by(|a, b| (&a.service, a.stream).cmp(&(&b.service, b.stream)));
        Ok(Backlog {
            dir,
            services: services.to_vec(),
            include_hooks,
            filter: filter.clone(),
            start,
            full: n > 0 && count >= n,
            streams,
        })
    }

    /// Per stream, the newest timestamp the backlog covers; and where the
    /// window of a backlog that holds all the lines asked for starts (a live
    /// line older than that is outside what was asked for).
    pub(crate) fn coverage(&self) -> (Vec<(String, Stream, u64)>, Option<u64>) {
        let ends = self
            .streams
            .iter()
            .map(|m| (m.service.clone(), m.stream, m.until))
            .collect();
        (ends, self.start.filter(|_| self.full))
    }

    /// The next page of the backlog; `None` once it is all handed out.
    /// Blocking.
    pub fn next_page(&mut self, limit: PageLimit) -> Result<Option<LogBatch>, LogError> {
        let Some(start) = self.start else {
            return Ok(None);
        };
        let streams = &self.streams;
        let mut batch = LogBatch::new();
        let page = forward::read_page(
            &self.dir,
            &self.services,
            self.include_hooks,
            &self.filter,
            |service, stream| {
                let mark = &streams[mark_of(streams, service, stream)?];
                let after = mark.after.or(start.checked_sub(1));
                after
                    .is_none_or(|after| after < mark.until)
                    .then_some(Window {
                        after,
                        until: mark.until,
                    })
            },
            &mut batch,
            limit,
        )?;
        for (service, stream, taken) in page.taken {
            if let Some(i) = mark_of(&self.streams, &service, stream) {
                self.streams[i].after = Some(taken);
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// Where the mark of one stream is in `marks` (sorted by service, then
/// stream): a page asks this for every stream, thousands of them with as
/// many services.
fn mark_of(marks: &[StreamMark], service: &str, stream: Stream) -> Option<usize> {
    marks
        .binary_search_by(|m| (m.service.as_str(), m.stream).cmp(&(service, stream)))
        .ok()
}
