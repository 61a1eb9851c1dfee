//! The `http:` probe: a minimal HTTP/1.1 `GET` over a plain TCP stream.
//!
//! Only the status line matters (2xx is healthy), so this is a few dozen
//! lines rather than an HTTP client crate with its connection pools and TLS
//! stacks: write the prepared request, read until the first CRLF into a
//! buffer the runner reuses, parse the code, close. The status line is
//! bounded by that buffer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::probe::timed_out;
use super::spec::HttpTarget;

/// Probes `target`; `buffer` (a few hundred bytes at least) holds the
/// status line, so a longer one is a failure.
pub(crate) async fn probe_http(
    target: &HttpTarget,
    buffer: &mut [u8],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let (stream, code) = match timeout_at(deadline, exchange(target, buffer)).await {
        Ok(answer) => answer?,
        Err(_) => return Err(timed_out(timeout)),
    };
    // The status line is all that matters: close now rather than wait for
    // the rest (a tenth of the daemon's cost per probe went to that wait).
    drop(stream);
    match code {
        200..=299 => Ok(()),
        _ => Err(format!("GET {} answered HTTP {code}", target.url)),
    }
}

/// Sends the request and reads the status code.
async fn exchange(target: &HttpTarget, buffer: &mut [u8]) -> Result<(TcpStream, u16), String> {
    let endpoint = &target.endpoint;
    let mut stream = endpoint
        .connect()
        .await
        .map_err(|err| format!("cannot connect to {endpoint}: {err}"))?;
    stream
        .write_all(&target.request)
        .await
        .map_err(|err| format!("sending GET {} failed: {err}", target.url))?;
    let mut filled = 0;
    let line_end = loop {
        if let Some(at) = buffer[..filled].windows(2).position(|pair| pair == b"\r\n") {
            break at;
        }
        if filled == buffer.len() {
            return Err(format!(
                "{endpoint} answered a status line longer than {} bytes",
                buffer.len()
            ));
        }
        let read = stream
            .read(&mut buffer[filled..])
            .await
            .map_err(|err| format!("reading the answer of {endpoint} failed: {err}"))?;
        if read == 0 {
            return Err(format!(
                "{endpoint} closed the connection without answering"
            ));
        }
        filled += read;
    };
    let code = status_code(&buffer[..line_end]).ok_or_else(|| {
        let shown = String::from_utf8_lossy(&buffer[..line_end.min(60)]);
        format!("{endpoint} did not answer HTTP: `{shown}`")
    })?;
    Ok((stream, code))
}

/// The code of a status line `HTTP/1.x NNN reason`.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&[_minor, b' ', a, b, c], tail) = rest.split_at_checked(5)? else {
        return None;
    };
    if !(tail.is_empty() || tail[0] == b' ') || ![a, b, c].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 204"), Some(204));
        assert_eq!(status_code(b"HTTP/1.1 20"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 OK"), None);
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code(b""), None);
    }
}
