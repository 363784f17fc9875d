//! Time ranges and the hourly partitioning of segments.

use chrono::{DateTime, Datelike, Timelike, Utc};

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;

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

/// RFC 3339 text of an instant, for ledger entries and reports.
pub fn format_micros(micros: i64) -> String {
    datetime_of(micros).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
