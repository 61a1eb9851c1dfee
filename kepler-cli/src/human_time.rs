//! Durations for people: the two largest units, e.g. `5s`, `3m 2s`, `1h 4m`, `2d 3h`.

pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_two_largest_units() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(60), "1m 0s");
        assert_eq!(human_duration(182), "3m 2s");
        assert_eq!(human_duration(3600 + 4 * 60 + 59), "1h 4m");
        assert_eq!(human_duration(2 * 86400 + 3 * 3600 + 59 * 60), "2d 3h");
        assert_eq!(human_duration(400 * 86400), "400d 0h");
    }
}
