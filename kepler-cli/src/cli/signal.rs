//! Signals on the command line: a name with or without `SIG` in any case
//! (`TERM`, `sigkill`), a number (`9`), or a real-time signal (`SIGRTMIN+3`).

use std::str::FromStr;

use nix::sys::signal::Signal;

/// Highest signal number Linux has (`SIGRTMAX`).
const MAX_SIGNAL: i32 = 64;

/// Parses a signal into its number; the error names the value and shows examples.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let invalid = || {
        format!(
            "'{text}' is not a signal: use a name such as TERM, SIGKILL, HUP or INT, \
             a number from 1 to {MAX_SIGNAL} such as 9, or SIGRTMIN+N"
        )
    };
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return if (1..=MAX_SIGNAL).contains(&number) {
            Ok(number)
        } else {
            Err(invalid())
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(number) = realtime_signal(&name) {
        return number.ok_or_else(invalid);
    }
    Signal::from_str(&name)
        .map(|signal| signal as i32)
        .map_err(|_| invalid())
}

/// `SIGRTMIN`, `SIGRTMIN+N`, `SIGRTMAX`, `SIGRTMAX-N`: `None` when `name` is
/// not of that form, `Some(None)` when it is but falls outside the range.
fn realtime_signal(name: &str) -> Option<Option<i32>> {
    // libc, not the kernel, knows where the usable range starts (glibc keeps
    // the first two real-time signals for itself).
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let (base, offset) = if let Some(rest) = name.strip_prefix("SIGRTMIN") {
        (min, rest)
    } else if let Some(rest) = name.strip_prefix("SIGRTMAX") {
        (max, rest)
    } else {
        return None;
    };
    let number = match offset {
        "" => Some(base),
        _ if offset.starts_with('+') && base == min => offset[1..]
            .parse::<i32>()
            .ok()
            .and_then(|n| base.checked_add(n)),
        _ if offset.starts_with('-') && base == max => offset[1..]
            .parse::<i32>()
            .ok()
            .and_then(|n| base.checked_sub(n)),
        _ => None,
    };
    Some(number.filter(|n| (min..=max).contains(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_accepted_with_or_without_sig_in_any_case() {
        for text in ["SIGKILL", "KILL", "kill", "sigkill", "Kill"] {
            assert_eq!(parse_signal(text), Ok(libc::SIGKILL), "{text}");
        }
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("hup"), Ok(libc::SIGHUP));
        assert_eq!(parse_signal("SIGUSR1"), Ok(libc::SIGUSR1));
    }

    #[test]
    fn numbers_from_one_to_sixty_four_are_accepted() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("1"), Ok(1));
        assert_eq!(parse_signal("64"), Ok(64));
    }

    #[test]
    fn realtime_signals_are_counted_from_rtmin_or_rtmax() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(parse_signal("SIGRTMIN"), Ok(min));
        assert_eq!(parse_signal("rtmin+3"), Ok(min + 3));
        assert_eq!(parse_signal("SIGRTMAX-1"), Ok(max - 1));
        assert!(parse_signal("SIGRTMIN+99").is_err());
        assert!(parse_signal("SIGRTMIN-1").is_err());
    }

    #[test]
    fn bad_values_are_rejected_naming_them_with_examples() {
        for bad in ["0", "65", "-9", "SIGNOPE", "", "K1LL", "9x"] {
            let err = parse_signal(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
            assert!(err.contains("SIGKILL") && err.contains('9'), "{err}");
        }
    }
}
