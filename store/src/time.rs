//! Time ranges and the hourly partitioning of segments.

use chrono::{DateTime, Datelike, Timelike, Utc};

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
pub const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;

/// A half-open range of event time in microseconds since the epoch: `start <= t < end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub start_micros: i64,
    pub end_micros: i64,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange { start_micros: i64::MIN, end_micros: i64::MAX };

    pub fn new(start_micros: i64, end_micros: i64) -> Self {
        TimeRange { start_micros, end_micros }
    }

    /// Whether any instant of the closed interval `[min, max]` lies in this range.
    pub fn overlaps(&self, min_micros: i64, max_micros: i64) -> bool {
        min_micros < self.end_micros && max_micros >= self.start_micros
    }

    pub fn contains(&self, micros: i64) -> bool {
        self.start_micros <= micros && micros < self.end_micros
    }
}

/// The hour bucket of an instant: segments never span two hours.
pub fn hour_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_HOUR)
}

/// The Hive-style partition directory of an hour bucket: `date=YYYY-MM-DD/hour=HH`.
pub fn partition_dir(hour: i64) -> String {
    let datetime = datetime_of(hour * MICROS_PER_HOUR);
    format!("date={:04}-{:02}-{:02}/hour={:02}", datetime.year(), datetime.month(), datetime.day(), datetime.hour())
}

/// Parses `date=YYYY-MM-DD/hour=HH` back into its hour bucket.
pub fn parse_partition_dir(dir: &str) -> Option<i64> {
    let (date, hour) = dir.split_once('/')?;
    let date = chrono::NaiveDate::parse_from_str(date.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.strip_prefix("hour=")?.parse().ok()?;
    let datetime = date.and_hms_opt(hour, 0, 0)?.and_utc();
    Some(hour_of(datetime.timestamp_micros()))
}

pub fn datetime_of(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// RFC 3339 text of an instant at microsecond precision, for ledger entries and SQL literals; instants
/// outside years 1 to 9999 are clamped to them.
pub fn format_micros(micros: i64) -> String {
    const FIRST: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
    const LAST: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    datetime_of(micros.clamp(FIRST, LAST)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// RFC 3339 text of an instant at whole seconds, for titles and messages; an instant that has no date
/// is written as its number.
pub fn format_seconds(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| micros.to_string())
}

/// A duration in microseconds: `500ms`, `30s`, `1m`, `5 minutes`, `1h`, `7d`, `2w` (a bare number is
/// seconds; also what Grafana's `$__interval` expands to). `None` unless it is a number of a known unit
/// from 0 up to about 3,000 years.
pub fn parse_duration_micros(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit_micros: f64 = match unit.trim() {
        "us" | "µs" | "microsecond" | "microseconds" => 1.0,
        "ms" | "millisecond" | "milliseconds" => 1e3,
        "s" | "sec" | "secs" | "second" | "seconds" | "" => 1e6,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
        "h" | "hr" | "hour" | "hours" => 3600e6,
        "d" | "day" | "days" => 86_400e6,
        "w" | "week" | "weeks" => 604_800e6,
        _ => return None,
    };
    let micros = (number * unit_micros).round();
    (0.0..1e17).contains(&micros).then_some(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_nonsense_does_not() {
        assert_eq!(parse_duration_micros("1m"), Some(MICROS_PER_MINUTE));
        assert_eq!(parse_duration_micros("5 minutes"), Some(5 * MICROS_PER_MINUTE));
        assert_eq!(parse_duration_micros("500ms"), Some(500_000));
        assert_eq!(parse_duration_micros("7d"), Some(7 * 24 * MICROS_PER_HOUR));
        assert_eq!(parse_duration_micros("1.5h"), Some(90 * MICROS_PER_MINUTE));
        assert_eq!(parse_duration_micros("0s"), Some(0));
        for nonsense in ["fortnight", "", "-1s", "1e30d", "h"] {
            assert_eq!(parse_duration_micros(nonsense), None, "{nonsense:?}");
        }
    }

    #[test]
    fn instants_format_as_rfc3339_and_out_of_range_ones_do_not_panic() {
        assert_eq!(format_seconds(1_700_000_000_123_456), "2023-11-14T22:13:20Z");
        assert_eq!(format_micros(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(format_micros(i64::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_micros(i64::MIN), "0001-01-01T00:00:00.000000Z");
        assert_eq!(format_seconds(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn partition_dirs_round_trip_including_before_the_epoch() {
        for micros in [0, 1_700_000_000_000_000, -1, -MICROS_PER_HOUR - 5, 4_102_444_800_000_000] {
            let hour = hour_of(micros);
            assert_eq!(parse_partition_dir(&partition_dir(hour)), Some(hour), "{micros}");
        }
        assert_eq!(partition_dir(hour_of(1_700_000_000_000_000)), "date=2023-11-14/hour=22");
        assert_eq!(partition_dir(hour_of(-1)), "date=1969-12-31/hour=23");
        assert_eq!(parse_partition_dir("date=2023-13-01/hour=00"), None);
        assert_eq!(parse_partition_dir("date=2023-12-01/hour=24"), None);
    }

    #[test]
    fn ranges_are_half_open_and_overlap_closed_intervals() {
        let range = TimeRange::new(10, 20);
        assert!(range.contains(10));
        assert!(!range.contains(20));
        assert!(range.overlaps(19, 30));
        assert!(!range.overlaps(20, 30));
        assert!(range.overlaps(0, 10));
        assert!(!range.overlaps(0, 9));
    }
}
