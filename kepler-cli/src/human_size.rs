//! Sizes and shares for people: `512K`, `38.4M`, `1.2G`, `12.5%`.

/// Bytes in powers of 1024 with one decimal below 100 of a unit, as the
/// config writes sizes (`K`, `M`, `G`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if value < 100.0 {
                format!("{value:.1}{unit}")
            } else {
                format!("{value:.0}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

/// A CPU share where 100 % is one CPU.
pub fn human_percent(percent: f64) -> String {
    format!("{percent:.1}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_the_largest_unit_that_fits() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(512 << 10), "512K");
        assert_eq!(human_bytes(38 << 20 | 400 << 10), "38.4M");
        assert_eq!(human_bytes(3 << 30), "3.0G");
        assert_eq!(human_percent(0.0), "0.0%");
        assert_eq!(human_percent(199.96), "200.0%");
    }
}
