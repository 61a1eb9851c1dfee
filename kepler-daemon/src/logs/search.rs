//! Finding records by position and by time inside one segment. A segment is
//! sorted by timestamp and every `\n` ends a record, so a binary search over
//! byte offsets finds the first record after a timestamp with a few small
//! reads, whatever the segment's size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::record;

/// Reads up to `buf.len()` bytes at `offset`; fewer at the end of the file
/// (which may have been cleared meanwhile).
pub(crate) fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The offset of the first record starting at or after `x` (a record starts
/// at 0 or right after a `\n`); `None` if no record starts before `len`.
pub(crate) fn record_start_at_or_after(file: &File, x: u64, len: u64) -> io::Result<Option<u64>> {
    if x == 0 {
        return Ok((len > 0).then_some(0));
    }
    let mut at = x - 1;
    let mut block = [0u8; 4096];
    while at < len {
        let size = ((len - at) as usize).min(block.len());
        let got = read_at_most(file, &mut block[..size], at)?;
        if got == 0 {
            return Ok(None);
        }
        if let Some(i) = memchr::memchr(b'\n', &block[..got]) {
            let start = at + i as u64 + 1;
            // The file may end before `len` (it was cleared meanwhile).
            let at_real_end = i + 1 == got && got < size;
            return Ok((start < len && !at_real_end).then_some(start));
        }
        at += got as u64;
    }
    Ok(None)
}

/// The first record starting at or after `x`: its offset and timestamp
/// (an unreadable timestamp counts as 0 so a search moves past it).
fn first_at(file: &File, x: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let Some(start) = record_start_at_or_after(file, x, len)? else {
        return Ok(None);
    };
    let mut digits = [0u8; 16];
    let size = ((len - start) as usize).min(digits.len());
    let got = read_at_most(file, &mut digits[..size], start)?;
    Ok(Some((
        start,
        record::parse_timestamp(&digits[..got]).unwrap_or(0),
    )))
}

/// The timestamp of the first record of `file`, if it has one.
pub(crate) fn first_timestamp(file: &File) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    Ok(first_at(file, 0, len)?.map(|(_, ts)| ts))
}

/// Offset of the first record stamped after `after`, or the file's end.
/// Binary search: `first_at(x)` is the first record starting at or after
/// `x`, and its timestamp grows with `x`.
pub(crate) fn first_record_after(file: &File, after: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_at(file, mid, len)? {
            Some((_, ts)) if ts <= after => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(first_at(file, lo, len)?.map_or(len, |(start, _)| start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::encode;
    use std::io::Write;

    fn file_with(records: &[(u64, &[u8])]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.stdout.log");
        let mut data = Vec::new();
        for (ts, payload) in records {
            encode(&mut data, *ts, b"-", payload);
        }
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&data))
            .expect("write");
        let file = File::open(&path).expect("open");
        (dir, file)
    }

    #[test]
    fn binary_search_finds_the_first_record_after_a_timestamp() {
        let payloads: Vec<Vec<u8>> = (0..1000).map(|i| vec![b'x'; i % 37]).collect();
        let recs: Vec<(u64, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (10 * i as u64 + 10, p.as_slice()))
            .collect();
        let (_dir, file) = file_with(&recs);
        let len = file.metadata().expect("meta").len();
        assert_eq!(first_record_after(&file, 0).expect("search"), 0);
        assert_eq!(first_record_after(&file, 10_000).expect("search"), len);
        assert_eq!(first_timestamp(&file).expect("read"), Some(10));
        for after in [10, 15, 20, 5000, 9995] {
            let off = first_record_after(&file, after).expect("search");
            let (start, ts) = first_at(&file, off, len).expect("read").expect("some");
            assert_eq!(start, off);
            assert_eq!(ts, (after / 10 + 1) * 10);
        }
    }

    #[test]
    fn record_starts_are_found_after_any_offset() {
        let (_dir, file) = file_with(&[(1, b"aa"), (2, b"bbbb")]);
        let len = file.metadata().unwrap().len();
        // Records are 22 and 24 bytes long.
        assert_eq!(record_start_at_or_after(&file, 0, len).unwrap(), Some(0));
        assert_eq!(record_start_at_or_after(&file, 1, len).unwrap(), Some(22));
        assert_eq!(record_start_at_or_after(&file, 22, len).unwrap(), Some(22));
        assert_eq!(record_start_at_or_after(&file, 23, len).unwrap(), None);
        // A length past the real end (the file shrank) is not an error.
        assert_eq!(
            record_start_at_or_after(&file, 23, len + 100).unwrap(),
            None
        );
    }
}
