//! The small value formats of `kepler.yaml`: durations, byte sizes, signals,
//! users and groups, exit-code filters, umasks and service names.
//!
//! Each type parses from the text a person writes and renders back to the
//! same human form, so the baked snapshot reads like the config and
//! round-trips exactly. Parse errors are plain sentences saying what is
//! allowed; the caller adds file, line and field.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr`, so the
/// snapshot stores the human form.
macro_rules! serde_via_text {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A duration written as number+unit pairs: `100ms`, `10s`, `5m`, `1h`, `1d`,
/// or combined like `1m30s`. A bare number is rejected: `timeout: 30` is
/// ambiguous between seconds and milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

pub const DURATION_FORMAT: &str =
    "a duration like 100ms, 10s, 5m, 1h, 1d or 1m30s (a bare number has no unit)";

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not {DURATION_FORMAT}");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let millis_per_unit = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total_ms = number
                .checked_mul(millis_per_unit)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        }
        Ok(Self(Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}
serde_via_text!(HumanDuration);

/// A byte count: a plain integer, or a number with `K`, `KB`, `M`, `MB`, `G`
/// or `GB` (case-insensitive, powers of 1024 as memory limits expect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

pub const SIZE_FORMAT: &str =
    "a size like 4096, 512K, 64KB, 50M, 50MB, 1G or 2GB (units are powers of 1024)";

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not {SIZE_FORMAT}");
        let trimmed = text.trim();
        let digits = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = trimmed[..digits].parse().map_err(|_| bad())?;
        let multiplier: u64 = match trimmed[digits..].trim_start().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" => 1 << 10,
            "M" | "MB" => 1 << 20,
            "G" | "GB" => 1 << 30,
            _ => return Err(bad()),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large a size"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
            // Sizes are powers of two, so a mask tests divisibility.
            if self.0 >= size && self.0 & (size - 1) == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}
serde_via_text!(ByteSize);

/// A share of CPU time counted in CPUs: `0.5` is half of one CPU, `2` two
/// whole ones. Kept in thousandths so it compares and prints exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuCount {
    millis: u64,
}

pub const CPUS_FORMAT: &str =
    "a number of CPUs like 0.5, 1 or 2.25 (at least 0.01, at most 3 decimals)";

impl CpuCount {
    /// Thousandths of a CPU.
    pub fn millis(self) -> u64 {
        self.millis
    }

    /// `cpu.max` as (quota, period) in microseconds, over a 100 ms period.
    pub fn quota_and_period(self) -> (u64, u64) {
        const PERIOD_USEC: u64 = 100_000;
        (self.millis * PERIOD_USEC / 1000, PERIOD_USEC)
    }
}

impl FromStr for CpuCount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not {CPUS_FORMAT}");
        let trimmed = text.trim();
        let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 3 {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let fraction: u64 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
        let millis = whole
            .checked_mul(1000)
            .and_then(|m| m.checked_add(fraction))
            .filter(|m| *m <= 10_000_000)
            .ok_or_else(|| format!("`{text}` is more CPUs than any machine has"))?;
        if millis < 10 {
            return Err(bad());
        }
        Ok(CpuCount { millis })
    }
}

impl fmt::Display for CpuCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.millis / 1000, self.millis % 1000);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let fraction = format!("{fraction:03}");
        write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
    }
}
serde_via_text!(CpuCount);

/// A signal given by name (`SIGTERM`, `TERM`, any case) or number (`9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StopSignal(pub Signal);

impl StopSignal {
    pub fn signal(self) -> Signal {
        self.0
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        Self(Signal::SIGTERM)
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if let Ok(number) = trimmed.parse::<i32>() {
            return Signal::try_from(number)
                .map(StopSignal)
                .map_err(|_| format!("`{text}` is not a signal number on this system"));
        }
        let upper = trimmed.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&name).map(StopSignal).map_err(|_| {
            format!("`{text}` is not a signal; expected a name like SIGTERM, TERM or SIGINT, or a number like 9")
        })
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}
serde_via_text!(StopSignal);

/// Who a process runs as. Names are resolved to ids later, at spawn time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserSpec {
    Name(String),
    Uid(u32),
    UidGid(u32, u32),
}

pub const USER_FORMAT: &str =
    "a user name (like postgres), a uid (like 1000) or uid:gid (like 1000:1000)";

/// POSIX-portable account names, plus the `$` suffix some systems use for
/// machine accounts.
fn is_account_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 32
}

impl FromStr for UserSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not {USER_FORMAT}");
        if let Some((uid, gid)) = text.split_once(':') {
            let uid = uid.parse().map_err(|_| bad())?;
            let gid = gid.parse().map_err(|_| bad())?;
            return Ok(Self::UidGid(uid, gid));
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(Self::Uid).map_err(|_| bad());
        }
        if is_account_name(text) {
            Ok(Self::Name(text.to_owned()))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Uid(uid) => write!(f, "{uid}"),
            Self::UidGid(uid, gid) => write!(f, "{uid}:{gid}"),
        }
    }
}
serde_via_text!(UserSpec);

/// A group given by name or gid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupSpec {
    Name(String),
    Gid(u32),
}

pub const GROUP_FORMAT: &str = "a group name (like developers) or a gid (like 1000)";

impl FromStr for GroupSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Self::Gid)
                .map_err(|_| format!("`{text}` is not {GROUP_FORMAT}"));
        }
        if is_account_name(text) {
            Ok(Self::Name(text.to_owned()))
        } else {
            Err(format!("`{text}` is not {GROUP_FORMAT}"))
        }
    }
}

impl fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Gid(gid) => write!(f, "{gid}"),
        }
    }
}
serde_via_text!(GroupSpec);

/// Which exit codes a `service_failed`/`service_stopped` edge reacts to:
/// single codes and inclusive ranges, e.g. `[5, '1:10']`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExitCodeFilter(pub Vec<ExitCodeRange>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitCodeRange {
    pub first: i32,
    pub last: i32,
}

pub const EXIT_CODE_FORMAT: &str =
    "an exit code 0-255 (like 5) or an inclusive range string (like '1:10')";

impl ExitCodeFilter {
    pub fn matches(&self, code: i32) -> bool {
        self.0.iter().any(|r| (r.first..=r.last).contains(&code))
    }
}

impl FromStr for ExitCodeRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not {EXIT_CODE_FORMAT}");
        let code = |part: &str| -> Result<i32, String> {
            match part.trim().parse::<i32>() {
                Ok(code) if (0..=255).contains(&code) => Ok(code),
                _ => Err(bad()),
            }
        };
        let range = match text.split_once(':') {
            Some((first, last)) => ExitCodeRange {
                first: code(first)?,
                last: code(last)?,
            },
            None => {
                let single = code(text)?;
                ExitCodeRange {
                    first: single,
                    last: single,
                }
            }
        };
        if range.first > range.last {
            return Err(format!(
                "`{text}` is an empty range; write the smaller code first, like '{}:{}'",
                range.last, range.first
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for ExitCodeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

impl Serialize for ExitCodeFilter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for range in &self.0 {
            if range.first == range.last {
                seq.serialize_element(&range.first)?;
            } else {
                seq.serialize_element(&range.to_string())?;
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ExitCodeFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Code(i64),
            Text(String),
        }
        let items = Vec::<Item>::deserialize(deserializer)?;
        items
            .into_iter()
            .map(|item| match item {
                Item::Code(code) => code.to_string().parse(),
                Item::Text(text) => text.parse(),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ExitCodeFilter)
            .map_err(serde::de::Error::custom)
    }
}

/// A process's file-creation mask, written in octal like `"0027"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Umask(pub u32);

/// What a service gets when its config sets no `umask` (the usual login
/// default), whatever the daemon's own is.
pub const DEFAULT_UMASK: Umask = Umask(0o022);

impl FromStr for Umask {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text.trim();
        let octal =
            (1..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8) {
            Ok(mask) if octal && mask <= 0o777 => Ok(Umask(mask)),
            _ => Err(format!(
                "`{text}` is not a umask; write it in octal from \"0000\" to \"0777\", like \"0027\""
            )),
        }
    }
}

impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}
serde_via_text!(Umask);

/// Service names become log file names and CLI arguments, so they are kept
/// to a portable file-name alphabet.
pub const SERVICE_NAME_RULE: &str =
    "1-63 characters, starting with a letter or digit, then letters, digits, `_`, `.` or `-`";

pub fn is_valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=63).contains(&name.len())
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The most instances one service may run (`replicas:` and `kepler scale`).
pub const MAX_REPLICAS: u32 = 1024;

/// The name of instance `replica` (from 1) of the replicated service
/// `service`: `web.3`. Service names have no `/`, so neither do these, and
/// they stay valid log file names.
pub fn instance_name(service: &str, replica: u32) -> String {
    format!("{service}.{replica}")
}

/// `web.3` read as (`web`, 3): a name, a dot, and a replica number written
/// the way [`instance_name`] writes it (1 to [`MAX_REPLICAS`], no leading
/// zero). Whether `web` is a replicated service is for the config to say.
pub fn split_instance_name(name: &str) -> Option<(&str, u32)> {
    let (service, number) = name.rsplit_once('.')?;
    if service.is_empty() || number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let replica: u32 = number.parse().ok()?;
    (1..=MAX_REPLICAS)
        .contains(&replica)
        .then_some((service, replica))
}

/// Whether `name` looks like `<service>.<digits>`, i.e. could be taken for
/// an instance of `service` if that service were replicated.
pub fn numbered_suffix(name: &str) -> Option<&str> {
    let (service, number) = name.rsplit_once('.')?;
    (!service.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .then_some(service)
}

#[cfg(test)]
mod umask_tests {
    use super::*;

    #[test]
    fn umasks_are_octal_from_0000_to_0777_and_render_with_four_digits() {
        assert_eq!("0027".parse(), Ok(Umask(0o027)));
        assert_eq!("22".parse(), Ok(Umask(0o022)));
        assert_eq!("0777".parse::<Umask>().unwrap().to_string(), "0777");
        assert_eq!(Umask(0o7).to_string(), "0007");
        for bad in ["1000", "0778", "8", "", "00022", "-022", "0x1f", "rwx"] {
            let err = bad.parse::<Umask>().unwrap_err();
            assert!(err.contains("octal"), "{bad}: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_counts_parse_decimals_and_print_them_back() {
        for (text, millis, quota) in [
            ("0.5", 500, 50_000),
            ("2", 2000, 200_000),
            ("1.25", 1250, 125_000),
            ("0.01", 10, 1_000),
        ] {
            let cpus: CpuCount = text.parse().unwrap();
            assert_eq!(cpus.millis(), millis, "{text}");
            assert_eq!(cpus.quota_and_period(), (quota, 100_000), "{text}");
            assert_eq!(cpus.to_string(), text);
        }
        assert_eq!("1.500".parse::<CpuCount>().unwrap().to_string(), "1.5");
        for bad in [
            "0", "0.001", "-1", "1.2345", "half", "", ".5", "1e3", "20000",
        ] {
            assert!(bad.parse::<CpuCount>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn durations_parse_every_unit_and_combinations() {
        let ms = |text: &str| text.parse::<HumanDuration>().unwrap().0.as_millis();
        assert_eq!(ms("100ms"), 100);
        assert_eq!(ms("10s"), 10_000);
        assert_eq!(ms("5m"), 300_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("1d"), 86_400_000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("0s"), 0);
    }

    #[test]
    fn durations_reject_bare_numbers_and_unknown_units() {
        for text in ["30", "", "10x", "s", "1.5s", "-1s", "10 s"] {
            let err = text.parse::<HumanDuration>().unwrap_err();
            assert!(err.contains("a bare number has no unit"), "{text}: {err}");
        }
    }

    #[test]
    fn durations_render_in_the_form_they_parse_from() {
        for text in ["100ms", "10s", "1m30s", "1d2h", "0s", "1s500ms"] {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(HumanDuration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn sizes_parse_units_case_insensitively() {
        let bytes = |text: &str| text.parse::<ByteSize>().unwrap().0;
        assert_eq!(bytes("4096"), 4096);
        assert_eq!(bytes("2048K"), 2048 * 1024);
        assert_eq!(bytes("64KB"), 64 * 1024);
        assert_eq!(bytes("512M"), 512 << 20);
        assert_eq!(bytes("50MB"), 50 << 20);
        assert_eq!(bytes("1G"), 1 << 30);
        assert_eq!(bytes("2gb"), 2 << 30);
        assert!("12T".parse::<ByteSize>().unwrap_err().contains("50MB"));
        assert!("M".parse::<ByteSize>().is_err());
        assert!("1.5G".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_round_trip_through_their_rendering() {
        for bytes in [0, 1000, 1024, 50 << 20, 3 << 30, (1 << 20) + 1] {
            let rendered = ByteSize(bytes).to_string();
            assert_eq!(rendered.parse::<ByteSize>().unwrap(), ByteSize(bytes));
        }
        assert_eq!(ByteSize(50 << 20).to_string(), "50M");
    }

    #[test]
    fn signals_parse_by_name_short_name_and_number() {
        let sig = |text: &str| text.parse::<StopSignal>().unwrap().0;
        assert_eq!(sig("SIGTERM"), Signal::SIGTERM);
        assert_eq!(sig("term"), Signal::SIGTERM);
        assert_eq!(sig("SigInt"), Signal::SIGINT);
        assert_eq!(sig("9"), Signal::SIGKILL);
        assert!("SIGNOPE"
            .parse::<StopSignal>()
            .unwrap_err()
            .contains("SIGTERM"));
        assert!("999".parse::<StopSignal>().is_err());
        assert_eq!(StopSignal(Signal::SIGKILL).to_string(), "SIGKILL");
    }

    #[test]
    fn users_and_groups_parse_their_three_and_two_forms() {
        assert_eq!("postgres".parse(), Ok(UserSpec::Name("postgres".into())));
        assert_eq!("1000".parse(), Ok(UserSpec::Uid(1000)));
        assert_eq!("1000:50".parse(), Ok(UserSpec::UidGid(1000, 50)));
        for bad in ["", "bob:staff", "1000:", "has space", "-x"] {
            assert!(bad.parse::<UserSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            "developers".parse(),
            Ok(GroupSpec::Name("developers".into()))
        );
        assert_eq!("100".parse(), Ok(GroupSpec::Gid(100)));
        assert!("a:b".parse::<GroupSpec>().is_err());
    }

    #[test]
    fn exit_code_filters_match_codes_and_inclusive_ranges() {
        let filter = ExitCodeFilter(vec!["5".parse().unwrap(), "10:12".parse().unwrap()]);
        assert!(filter.matches(5) && filter.matches(10) && filter.matches(12));
        assert!(!filter.matches(0) && !filter.matches(6) && !filter.matches(13));
        assert!("256".parse::<ExitCodeRange>().is_err());
        assert!("9:3"
            .parse::<ExitCodeRange>()
            .unwrap_err()
            .contains("'3:9'"));
        let yaml = serde_yaml::to_string(&filter).unwrap();
        assert_eq!(
            serde_yaml::from_str::<ExitCodeFilter>(&yaml).unwrap(),
            filter
        );
    }

    #[test]
    fn instance_names_round_trip_and_only_canonical_numbers_split() {
        assert_eq!(instance_name("web", 3), "web.3");
        assert_eq!(split_instance_name("web.3"), Some(("web", 3)));
        assert_eq!(split_instance_name("api.v2.1024"), Some(("api.v2", 1024)));
        for not_an_instance in [
            "web", "web.", ".3", "web.0", "web.03", "web.1025", "web.x", "web.-1",
        ] {
            assert_eq!(
                split_instance_name(not_an_instance),
                None,
                "{not_an_instance}"
            );
        }
        assert_eq!(numbered_suffix("web.07"), Some("web"));
        assert_eq!(numbered_suffix("web.v2"), None);
    }

    #[test]
    fn service_names_follow_the_file_name_rule() {
        for good in ["web", "db-1", "a.b_c", "9lives"] {
            assert!(is_valid_service_name(good), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "-web", "_x", "has space", "a/b", too_long.as_str()] {
            assert!(!is_valid_service_name(bad), "{bad}");
        }
    }
}
