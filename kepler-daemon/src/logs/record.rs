//! The on-disk line format and the file names.
//!
//! A log file is a sequence of records, one per line of output:
//!
//! ```text
//! <timestamp: 16 lowercase hex digits, unix µs> <origin> <raw bytes of the line>\n
//! 0006189a3c2f4e10 - listening on :8080
//! 0006189a3c2f5a77 pre_start migrating database
//! ```
//!
//! `<origin>` is `-` for the service's own output, or the hook's name
//! (restricted to `[A-Za-z0-9_.:-]`, other bytes become `_`). The payload is
//! the line exactly as read, non-UTF-8 included; it never contains `\n`
//! because lines are split on `\n`, so every `\n` in a file ends a record.
//! That makes the format cheap to write (a fixed-width header and a copy), and
//! lets readers walk backwards from the end with `memrchr`. Lines longer than
//! [`MAX_LINE_BYTES`] are stored as several records.
//!
//! Each stream is stored in at most two segments: the current one,
//! `<service>.stdout.log` (or `.stderr.log`), and, once `max_size` has made
//! it rotate, the previous one, `<service>.stdout.log.1`. Every record of the
//! previous segment is older than every record of the current one. Output of
//! global hooks goes to the reserved service [`GLOBAL_SERVICE`], which user
//! services cannot be named since service names start with a letter or digit.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::{Origin, Stream};

/// The longest line stored as one record; longer lines are split.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Service name under which global hooks' output is stored.
pub const GLOBAL_SERVICE: &str = "_kepler";

const TS_DIGITS: usize = 16;
/// Tag of lines written by the service itself.
const SERVICE_TAG: &[u8] = b"-";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// One of the (at most two) files of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// Older records, renamed aside by the last rotation.
    Previous,
    /// Where new records are appended.
    Current,
}

/// The file name of a segment: `<service>.<stream>.log`, plus `.1` for the
/// previous segment. `None` for a service name that could not be a single
/// file name (service names are validated at bake; this is the last guard).
pub fn file_name(service: &str, stream: Stream, segment: Segment) -> Option<String> {
    if service.is_empty() || service.starts_with('.') || service.contains(['/', '\0']) {
        return None;
    }
    let suffix = match segment {
        Segment::Current => "",
        Segment::Previous => ".1",
    };
    Some(format!("{service}.{}.log{suffix}", stream.as_str()))
}

/// The path of a stream's current segment (for tools and tests; the daemon
/// opens files through the directory fd).
pub fn log_path(dir: &Path, service: &str, stream: Stream) -> PathBuf {
    dir.join(format!("{service}.{}.log", stream.as_str()))
}

/// Splits a file name into service, stream and segment, for
/// `<service>.<stream>.log` and `<service>.<stream>.log.1`.
pub fn parse_file_name(name: &str) -> Option<(&str, Stream, Segment)> {
    let (stem, segment) = match name.strip_suffix(".log.1") {
        Some(stem) => (stem, Segment::Previous),
        None => (name.strip_suffix(".log")?, Segment::Current),
    };
    let (service, stream) = if let Some(s) = stem.strip_suffix(".stdout") {
        (s, Stream::Stdout)
    } else {
        (stem.strip_suffix(".stderr")?, Stream::Stderr)
    };
    // Temp files start with a dot.
    (!service.is_empty() && !service.starts_with('.')).then_some((service, stream, segment))
}

/// The origin field as written to disk.
pub fn origin_tag(origin: &Origin) -> Cow<'static, [u8]> {
    match origin {
        Origin::Service => Cow::Borrowed(SERVICE_TAG),
        Origin::Hook(name) => {
            let mut tag: Vec<u8> = name
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' | b'-' => b,
                    _ => b'_',
                })
                .collect();
            if tag.is_empty() || tag == SERVICE_TAG {
                tag.insert(0, b'_');
            }
            Cow::Owned(tag)
        }
    }
}

/// Bytes a record of `payload_len` bytes takes on disk.
pub fn encoded_len(tag: &[u8], payload_len: usize) -> usize {
    TS_DIGITS + 1 + tag.len() + 1 + payload_len + 1
}

/// Appends one record to `out`. `payload` must not contain `\n`.
pub fn encode(out: &mut Vec<u8>, timestamp_us: u64, tag: &[u8], payload: &[u8]) {
    debug_assert!(!payload.contains(&b'\n'));
    let mut header = [0u8; TS_DIGITS + 1];
    for (i, digit) in header[..TS_DIGITS].iter_mut().enumerate() {
        *digit = HEX[((timestamp_us >> ((TS_DIGITS - 1 - i) * 4)) & 0xf) as usize];
    }
    header[TS_DIGITS] = b' ';
    out.extend_from_slice(&header);
    out.extend_from_slice(tag);
    out.push(b' ');
    out.extend_from_slice(payload);
    out.push(b'\n');
}

/// One record as read from a file, borrowing the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_us: u64,
    /// `None` for the service's own output, else the hook's name.
    pub hook: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Where the origin tag starts in a record.
pub const HOOK_OFFSET: usize = TS_DIGITS + 1;

/// Where the payload of `rec` starts in its record.
pub fn payload_offset(rec: &Record<'_>) -> usize {
    HOOK_OFFSET + rec.hook.map_or(SERVICE_TAG.len(), <[u8]>::len) + 1
}

impl Record<'_> {
    pub fn origin(&self) -> Origin {
        match self.hook {
            None => Origin::Service,
            Some(name) => Origin::Hook(String::from_utf8_lossy(name).into_owned()),
        }
    }
}

/// Value of each byte as a hex digit, or `INVALID`.
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const INVALID: u8 = 0x10;

/// Reads the timestamp at the start of a record. On the path of every line
/// read back, hence a table and one check at the end instead of a branch per
/// digit.
pub fn parse_timestamp(record: &[u8]) -> Option<u64> {
    let digits: &[u8; TS_DIGITS] = record.get(..TS_DIGITS)?.try_into().ok()?;
    let mut ts = 0u64;
    let mut bad = 0u8;
    for &d in digits {
        let v = HEX_VALUE[d as usize];
        bad |= v;
        ts = (ts << 4) | u64::from(v & 0xf);
    }
    (bad & INVALID == 0).then_some(ts)
}

/// Parses one record given without its `\n`; `None` if it is not a record
/// (e.g. garbage left by a crash in the middle of a write).
pub fn parse(record: &[u8]) -> Option<Record<'_>> {
    let timestamp_us = parse_timestamp(record)?;
    if record.get(TS_DIGITS) != Some(&b' ') {
        return None;
    }
    let rest = &record[TS_DIGITS + 1..];
    // Most lines are the service's own: skip the search for their tag's end.
    if let [b'-', b' ', payload @ ..] = rest {
        return Some(Record {
            timestamp_us,
            hook: None,
            payload,
        });
    }
    let space = memchr::memchr(b' ', rest)?;
    let (tag, payload) = (&rest[..space], &rest[space + 1..]);
    let hook = match tag {
        [] => return None,
        SERVICE_TAG => None,
        name => Some(name),
    };
    Some(Record {
        timestamp_us,
        hook,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ts: u64, origin: &Origin, payload: &[u8]) -> (u64, Origin, Vec<u8>) {
        let mut out = Vec::new();
        let tag = origin_tag(origin);
        encode(&mut out, ts, &tag, payload);
        assert_eq!(out.len(), encoded_len(&tag, payload.len()));
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(memchr::memchr_iter(b'\n', &out).count(), 1);
        let rec = parse(&out[..out.len() - 1]).expect("parses");
        (rec.timestamp_us, rec.origin(), rec.payload.to_vec())
    }

    #[test]
    fn record_round_trips_timestamp_origin_and_bytes() {
        let hook = Origin::Hook("pre_start".into());
        assert_eq!(
            round_trip(1_700_000_000_123_456, &hook, b"hello world"),
            (1_700_000_000_123_456, hook, b"hello world".to_vec())
        );
        assert_eq!(
            round_trip(u64::MAX, &Origin::Service, b"x y  z"),
            (u64::MAX, Origin::Service, b"x y  z".to_vec())
        );
    }

    #[test]
    fn record_keeps_non_utf8_bytes_and_carriage_returns() {
        let payload = b"\xff\xfe caf\xc3\xa9 \x00\x1b[31m red\r";
        let (_, _, bytes) = round_trip(7, &Origin::Service, payload);
        assert_eq!(bytes, payload);
    }

    #[test]
    fn record_stores_empty_lines() {
        assert_eq!(round_trip(1, &Origin::Service, b"").2, b"");
        let mut out = Vec::new();
        encode(&mut out, 1, b"-", b"");
        assert_eq!(out, b"0000000000000001 - \n");
    }

    #[test]
    fn record_of_maximum_length_round_trips() {
        let payload = vec![b'a'; MAX_LINE_BYTES];
        assert_eq!(round_trip(3, &Origin::Service, &payload).2, payload);
    }

    #[test]
    fn hook_names_are_sanitised_so_they_cannot_break_the_header() {
        assert_eq!(
            &*origin_tag(&Origin::Hook("bad name\n".into())),
            b"bad_name_"
        );
        assert_eq!(&*origin_tag(&Origin::Hook("-".into())), b"_-");
        assert_eq!(&*origin_tag(&Origin::Hook(String::new())), b"_");
        let (_, origin, _) = round_trip(1, &Origin::Hook("-".into()), b"x");
        assert_eq!(origin, Origin::Hook("_-".into()));
    }

    #[test]
    fn garbage_is_not_a_record() {
        assert!(parse(b"").is_none());
        assert!(parse(b"0000000000000001").is_none());
        assert!(parse(b"000000000000000g - x").is_none());
        assert!(parse(b"0000000000000001 -").is_none());
        assert!(parse(b"0000000000000001  x").is_none());
    }

    #[test]
    fn file_names_map_to_service_stream_and_segment() {
        assert_eq!(
            parse_file_name("web.stdout.log"),
            Some(("web", Stream::Stdout, Segment::Current))
        );
        assert_eq!(
            parse_file_name("web.stdout.log.1"),
            Some(("web", Stream::Stdout, Segment::Previous))
        );
        assert_eq!(
            parse_file_name("a.b.stderr.log"),
            Some(("a.b", Stream::Stderr, Segment::Current))
        );
        assert_eq!(parse_file_name(".web.stdout.log.tmp"), None);
        assert_eq!(parse_file_name(".web.stdout.log.1.tmp"), None);
        assert_eq!(parse_file_name(".web.stdout.log"), None);
        assert_eq!(parse_file_name("web.log"), None);
        assert_eq!(parse_file_name("web.stdout.log.2"), None);
        for segment in [Segment::Current, Segment::Previous] {
            let name = file_name("web", Stream::Stderr, segment).unwrap();
            assert_eq!(
                parse_file_name(&name),
                Some(("web", Stream::Stderr, segment))
            );
        }
        assert_eq!(
            log_path(Path::new("/x"), "_kepler", Stream::Stderr),
            PathBuf::from("/x/_kepler.stderr.log")
        );
    }

    #[test]
    fn names_that_are_not_one_file_name_have_no_segment_files() {
        for bad in ["", "../x", "a/b", ".hidden", "nul\0"] {
            assert_eq!(
                file_name(bad, Stream::Stdout, Segment::Current),
                None,
                "{bad:?}"
            );
        }
    }
}
