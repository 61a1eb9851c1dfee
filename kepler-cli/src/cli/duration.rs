//! Durations on the command line: `500ms`, `30s`, `5m`, `1h`, `1d`, and sums
//! of them written together such as `1h30m`.

use std::time::Duration;

/// Parses a duration such as `30s` or `1m30s`; the error names the value.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "'{text}' is not a duration: write a number followed by ms, s, m, h or d \
             (e.g. 500ms, 30s, 5m, 1h30m)"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        let part = number
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("'{text}' is too long a duration"))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| format!("'{text}' is too long a duration"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_is_understood() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parts_written_together_add_up() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h1m1s500ms"),
            Ok(Duration::from_millis(3_661_500))
        );
    }

    #[test]
    fn values_without_a_known_unit_are_rejected_naming_them() {
        for bad in ["", "30", "s", "10x", "5 m", "1.5s", "-1s", "10S", "1m30"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(&format!("'{}'", bad.trim())), "{bad}: {err}");
            assert!(err.contains("e.g."), "{bad}: {err}");
        }
    }

    #[test]
    fn overflowing_values_are_rejected() {
        let err = parse_duration("99999999999999999d").unwrap_err();
        assert!(err.contains("too long"), "{err}");
    }
}
