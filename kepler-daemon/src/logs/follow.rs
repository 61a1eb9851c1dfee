//! Following: pumps publish each stored batch into the config's ring, and a
//! [`Follower`] turns the batches into the lines its client asked for.
//!
//! No polling and no re-reading of files: a follower waits on a watch of the
//! ring's sequence number. The ring is bounded by bytes ([`RING_BYTES`]), not
//! by batches, so what a config keeps for its followers has a fixed cap
//! whatever the lines look like and however many followers there are: a
//! batch leaves the ring once every follower has read it, or when newer
//! batches need its room. A follower that falls that far behind (its client
//! stopped reading) does not slow writers down and keeps nothing alive: it
//! loses the oldest batches and learns how many lines it missed from the
//! sequence numbers. Nothing is published while nobody follows.
//!
//! Joining the stored lines with live ones: the follower subscribes first,
//! then the backlog ([`super::backlog`]) notes, for each stream, the newest
//! timestamp stored; it hands out lines up to those and the follower skips
//! live lines at or before them (timestamps increase along a stream), so the
//! two join without gap or duplicate, with memory per stream, not per line.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use super::{lock, LogLine, Origin, Stream};

/// Bytes of published lines a config keeps for its followers.
pub const RING_BYTES: usize = 4 * 1024 * 1024;

/// Lines stored together, as published: their texts in one buffer.
#[derive(Debug)]
pub(crate) struct PublishedBatch {
    first_seq: u64,
    service: Arc<str>,
    stream: Stream,
    origin: Origin,
    first_ts: u64,
    text: Box<[u8]>,
    /// End of each line in `text`.
    ends: Box<[u32]>,
}

impl PublishedBatch {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn end_seq(&self) -> u64 {
        self.first_seq + self.len() as u64
    }

    /// What the batch costs to keep.
    fn bytes(&self) -> usize {
        self.text.len() + 4 * self.ends.len() + std::mem::size_of::<Self>()
    }

    fn line(&self, i: usize) -> LogLine {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        LogLine {
            service: self.service.to_string(),
            stream: self.stream,
            origin: self.origin.clone(),
            timestamp_us: self.first_ts + i as u64,
            bytes: self.text[start..self.ends[i] as usize].to_vec(),
        }
    }
}

struct Ring {
    batches: VecDeque<Arc<PublishedBatch>>,
    bytes: usize,
    next_seq: u64,
    /// Each live follower's next sequence number.
    positions: Vec<Weak<AtomicU64>>,
}

pub(crate) struct Publisher {
    ring: Mutex<Ring>,
    /// The ring's next sequence number, changed after each publish.
    seq: watch::Sender<u64>,
    followers: AtomicUsize,
}

impl Publisher {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Publisher {
            ring: Mutex::new(Ring {
                batches: VecDeque::new(),
                bytes: 0,
                next_seq: 0,
                positions: Vec::new(),
            }),
            seq: watch::channel(0).0,
            followers: AtomicUsize::new(0),
        })
    }

    pub(crate) fn has_followers(&self) -> bool {
        self.followers.load(Ordering::Acquire) > 0
    }

    /// Publishes the lines `payloads`, stamped from `first_ts` on.
    pub(crate) fn publish<'a>(
        &self,
        service: &Arc<str>,
        stream: Stream,
        origin: &Origin,
        first_ts: u64,
        payloads: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
    ) {
        let total: usize = payloads.clone().map(<[u8]>::len).sum();
        let mut text = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(payloads.len());
        for payload in payloads {
            text.extend_from_slice(payload);
            ends.push(text.len() as u32);
        }
        let mut ring = lock(&self.ring);
        let batch = Arc::new(PublishedBatch {
            first_seq: ring.next_seq,
            service: service.clone(),
            stream,
            origin: origin.clone(),
            first_ts,
            text: text.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
        });
        ring.next_seq = batch.end_seq();
        ring.bytes += batch.bytes();
        ring.batches.push_back(batch);
        // Drop what every follower has read, then what does not fit.
        ring.positions.retain(|p| p.strong_count() > 0);
        let read_by_all = ring
            .positions
            .iter()
            .filter_map(Weak::upgrade)
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        while let Some(oldest) = ring.batches.front() {
            let over = ring.bytes > RING_BYTES && ring.batches.len() > 1;
            if oldest.end_seq() > read_by_all && !over {
                break;
            }
            ring.bytes -= oldest.bytes();
            ring.batches.pop_front();
        }
        let next_seq = ring.next_seq;
        drop(ring);
        self.seq.send_replace(next_seq);
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        services: &[String],
        include_hooks: bool,
    ) -> Follower {
        let mut ring = lock(&self.ring);
        let position = Arc::new(AtomicU64::new(ring.next_seq));
        // Followers that left are forgotten here too, not only on publish,
        // so follows of a quiet config leave nothing behind.
        ring.positions.retain(|p| p.strong_count() > 0);
        ring.positions.push(Arc::downgrade(&position));
        self.followers.fetch_add(1, Ordering::AcqRel);
        drop(ring);
        Follower {
            publisher: Arc::downgrade(self),
            seq: self.seq.subscribe(),
            position,
            services: services.to_vec(),
            include_hooks,
            backlog_ends: Vec::new(),
            skip_before: 0,
            current: None,
        }
    }

    /// The first batch holding lines at or after `seq`.
    fn batch_from(&self, seq: u64) -> Option<Arc<PublishedBatch>> {
        let ring = lock(&self.ring);
        let i = ring.batches.partition_point(|b| b.end_seq() <= seq);
        ring.batches.get(i).cloned()
    }

    fn unsubscribe(&self) {
        if self.followers.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut ring = lock(&self.ring);
            if self.followers.load(Ordering::Acquire) == 0 {
                ring.batches.clear();
                ring.bytes = 0;
            }
        }
    }
}

/// What a follower receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    Line(LogLine),
    /// The follower fell behind and this many lines (of all services) were
    /// published without reaching it.
    Missed(u64),
}

/// Live lines of some services of one config.
pub struct Follower {
    publisher: Weak<Publisher>,
    seq: watch::Receiver<u64>,
    /// The next sequence number to hand out (read by the ring to free
    /// batches every follower is past).
    position: Arc<AtomicU64>,
    /// Empty: every service.
    services: Vec<String>,
    include_hooks: bool,
    /// Per stream: lines stamped at or before this were in the backlog.
    backlog_ends: Vec<(String, Stream, u64)>,
    /// Live lines stamped before this are older than a full tail's window.
    skip_before: u64,
    /// The batch being handed out, the index of its next line, and the
    /// timestamp up to which its lines were already handed out.
    current: Option<(Arc<PublishedBatch>, usize, u64)>,
}

impl Follower {
    /// Makes the follower continue after a backlog: `ends` is, per stream,
    /// the newest timestamp the backlog covers, `window_start` the first
    /// timestamp of a backlog that held all the lines asked for.
    pub(crate) fn continue_after(
        &mut self,
        ends: Vec<(String, Stream, u64)>,
        window_start: Option<u64>,
    ) {
        self.backlog_ends = ends;
        self.skip_before = window_start.unwrap_or(0);
    }

    fn wants_batch(&self, batch: &PublishedBatch) -> bool {
        (self.include_hooks || batch.origin == Origin::Service)
            && (self.services.is_empty() || self.services.iter().any(|s| **s == *batch.service))
    }

    /// Lines of `batch` stamped at or before this were already handed out.
    fn covered_until(&self, batch: &PublishedBatch) -> u64 {
        let backlog = self
            .backlog_ends
            .iter()
            .find(|(service, stream, _)| *stream == batch.stream && **service == *batch.service)
            .map_or(0, |(_, _, end)| *end);
        backlog.max(self.skip_before.saturating_sub(1))
    }

    /// The next line or gap report; `None` when the store is gone.
    pub async fn next(&mut self) -> Option<FollowEvent> {
        loop {
            if let Some(line) = self.next_in_current() {
                return Some(FollowEvent::Line(line));
            }
            let position = self.position.load(Ordering::Acquire);
            // Marked seen before looking, so a publish after the look wakes us.
            self.seq.borrow_and_update();
            let batch = self.publisher.upgrade()?.batch_from(position);
            let Some(batch) = batch else {
                self.seq.changed().await.ok()?;
                continue;
            };
            let missed = batch.first_seq.saturating_sub(position);
            if self.wants_batch(&batch) {
                self.position.store(batch.first_seq, Ordering::Release);
                let covered = self.covered_until(&batch);
                self.current = Some((batch, 0, covered));
            } else {
                self.position.store(batch.end_seq(), Ordering::Release);
            }
            if missed > 0 {
                return Some(FollowEvent::Missed(missed));
            }
        }
    }

    /// The next wanted line of the batch at hand.
    fn next_in_current(&mut self) -> Option<LogLine> {
        let (batch, next, covered) = self.current.as_mut()?;
        while *next < batch.len() {
            let i = *next;
            *next += 1;
            if batch.first_ts + i as u64 > *covered {
                return Some(batch.line(i));
            }
        }
        self.position.store(batch.end_seq(), Ordering::Release);
        self.current = None;
        None
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(publisher) = self.publisher.upgrade() {
            publisher.unsubscribe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_bytes(publisher: &Publisher) -> usize {
        lock(&publisher.ring).bytes
    }

    fn publish(publisher: &Publisher, first_ts: u64, lines: usize, len: usize) {
        let line = vec![b'x'; len];
        let service: Arc<str> = "web".into();
        let payloads = std::iter::repeat_n(&line[..], lines);
        publisher.publish(
            &service,
            Stream::Stdout,
            &Origin::Service,
            first_ts,
            payloads,
        );
    }

    #[tokio::test]
    async fn the_ring_keeps_what_a_follower_has_not_read_and_no_more_than_its_bytes() {
        let publisher = Publisher::new();
        publish(&publisher, 1, 10, 10);
        assert_eq!(
            ring_bytes(&publisher),
            0,
            "nothing is kept without followers"
        );

        let mut follower = publisher.subscribe(&[], true);
        for batch in 0..10 {
            publish(&publisher, 100 + batch * 10, 10, 10);
        }
        let kept = ring_bytes(&publisher);
        assert!(kept > 0);
        for _ in 0..100 {
            assert!(matches!(follower.next().await, Some(FollowEvent::Line(_))));
        }
        // Read by every follower: gone at the next publish.
        publish(&publisher, 1000, 1, 10);
        assert!(ring_bytes(&publisher) < kept / 5);

        // A follower that stops reading holds at most the ring's bytes.
        for batch in 0..200 {
            publish(&publisher, 2000 + batch * 1000, 1000, 100);
        }
        assert!(ring_bytes(&publisher) <= RING_BYTES);
        // It learns what it missed (the oldest lines, its unread one
        // included), then goes on with the newest still kept.
        let missed = match follower.next().await {
            Some(FollowEvent::Missed(n)) => n,
            other => panic!("{other:?}"),
        };
        assert!(missed > 100_000 && missed < 200_001, "{missed}");
        match follower.next().await {
            Some(FollowEvent::Line(line)) => {
                assert_eq!(line.timestamp_us, 2000 + (missed - 1) / 1000 * 1000);
            }
            other => panic!("{other:?}"),
        }

        // The last follower gone, the ring empties and forgets it.
        drop(follower);
        assert_eq!(ring_bytes(&publisher), 0);
        let _again = publisher.subscribe(&[], true);
        assert_eq!(lock(&publisher.ring).positions.len(), 1);
    }
}
