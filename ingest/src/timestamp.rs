//! Fast timestamp parsing for the formats logs carry: ISO 8601 / RFC 3339, `YYYY-MM-DD HH:MM:SS`,
//! `YYYY/MM/DD HH:MM:SS`, and epoch numbers.

/// Days from 1970-01-01 to the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = month as i64;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn digits(bytes: &[u8], at: usize, n: usize) -> Option<u32> {
    let slice = bytes.get(at..at + n)?;
    let mut value = 0u32;
    for byte in slice {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (byte - b'0') as u32;
    }
    Some(value)
}

/// Parses the timestamp at the start of `text`; returns microseconds since the epoch (UTC) and the
/// number of bytes it took. Accepts `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM|±HHMM]` and `YYYY/MM/DD HH:MM:SS`.
/// Without a zone the time is taken as UTC.
pub fn parse_prefix(text: &str) -> Option<(i64, usize)> {
    let bytes = text.as_bytes();
    let year = digits(bytes, 0, 4)?;
    let separator = *bytes.get(4)?;
    if (separator != b'-' && separator != b'/') || *bytes.get(7)? != separator {
        return None;
    }
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    if !matches!(bytes.get(10)?, b'T' | b' ') {
        return None;
    }
    let hour = digits(bytes, 11, 2)?;
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    if bytes.get(13)? != &b':' || bytes.get(16)? != &b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut micros = 0i64;
    if matches!(bytes.get(at), Some(b'.') | Some(b',')) {
        at += 1;
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            if at - start < 6 {
                micros = micros * 10 + (bytes[at] - b'0') as i64;
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start).min(6)..6 {
            micros *= 10;
        }
    }
    let mut offset_seconds = 0i64;
    match bytes.get(at) {
        Some(b'Z') | Some(b'z') => at += 1,
        Some(sign @ (b'+' | b'-')) if separator == b'-' => {
            let sign = if *sign == b'-' { -1 } else { 1 };
            let hours = digits(bytes, at + 1, 2)?;
            let (minutes, len) = match bytes.get(at + 3) {
                Some(b':') => (digits(bytes, at + 4, 2)?, 6),
                _ => (digits(bytes, at + 3, 2).unwrap_or(0), if digits(bytes, at + 3, 2).is_some() { 5 } else { 3 }),
            };
            offset_seconds = sign * (hours as i64 * 3600 + minutes as i64 * 60);
            at += len;
        }
        _ => {}
    }
    let days = days_from_civil(year as i64, month, day);
    let seconds = days * 86_400 + hour as i64 * 3600 + minute as i64 * 60 + second as i64 - offset_seconds;
    Some((seconds * 1_000_000 + micros, at))
}

/// Parses a whole string as a timestamp.
pub fn parse(text: &str) -> Option<i64> {
    let (micros, len) = parse_prefix(text.trim())?;
    (len == text.trim().len()).then_some(micros)
}

/// An epoch number in seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude (a
/// time between 1973 and 5138 in seconds, or 1973 to 2286 in the finer units), to microseconds.
pub fn epoch_to_micros(value: f64) -> Option<i64> {
    if !value.is_finite() || value <= 0.0 {
        return None;
    }
    let micros = if value < 1e11 {
        value * 1e6
    } else if value < 1e14 {
        value * 1e3
    } else if value < 1e17 {
        value
    } else {
        value / 1e3
    };
    (micros < 7.258_118_4e15).then_some(micros.round() as i64)
}

/// A JSON time value: an epoch number (any unit, see `epoch_to_micros`), a string of one, or a
/// timestamp string (RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` as Logs Insights prints, and the like).
pub fn of_json(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(number) => epoch_to_micros(number.as_f64()?),
        serde_json::Value::String(text) => of_text(text),
        _ => None,
    }
}

/// `of_json` of a string.
pub fn of_text(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !text.is_empty() {
        return epoch_to_micros(text.parse().ok()?);
    }
    parse(text)
}

/// The fields that hold the time of a JSON record of unknown shape, in the order they are tried.
pub const TIME_FIELDS: [&str; 5] = ["timestamp", "time", "@timestamp", "eventTime", "ts"];

/// The time of a JSON record of unknown shape, from the first of `TIME_FIELDS` that holds one.
pub fn of_record(record: &serde_json::Value) -> Option<i64> {
    TIME_FIELDS.iter().find_map(|field| of_json(record.get(field)?))
}

/// Milliseconds since the epoch to microseconds, refusing values outside years 1970 to 2200.
pub fn millis_to_micros(millis: i64) -> Option<i64> {
    (0..7_258_118_400_000).contains(&millis).then_some(millis * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<&str>) {
        let expected = expected.map(|e| chrono::DateTime::parse_from_rfc3339(e).unwrap().timestamp_micros());
        assert_eq!(parse(text), expected, "{text}");
    }

    #[test]
    fn formats_logs_use_parse_to_the_right_instant() {
        check("2024-08-01T13:47:16Z", Some("2024-08-01T13:47:16Z"));
        check("2024-08-01T13:47:16.263Z", Some("2024-08-01T13:47:16.263Z"));
        check("2024-08-01T13:47:16.263123456Z", Some("2024-08-01T13:47:16.263123Z"));
        check("2024-08-01 13:47:16", Some("2024-08-01T13:47:16Z"));
        check("2024/08/01 13:47:16", Some("2024-08-01T13:47:16Z"));
        check("2024-08-01T13:47:16+02:00", Some("2024-08-01T11:47:16Z"));
        check("2024-08-01T13:47:16.5-0130", Some("2024-08-01T15:17:16.5Z"));
        check("2000-02-29T00:00:00Z", Some("2000-02-29T00:00:00Z"));
        check("1969-12-31T23:59:59Z", Some("1969-12-31T23:59:59Z"));
        check("2024-13-01T00:00:00Z", None);
        check("2024-08-01T13:47", None);
        check("2024-08-01T13:47:16.Z", None);
        check("not a time", None);
        check("", None);
    }

    #[test]
    fn epoch_numbers_of_every_unit_give_the_same_instant() {
        let micros = 1_700_000_000_123_000;
        assert_eq!(epoch_to_micros(1_700_000_000.123), Some(micros));
        assert_eq!(epoch_to_micros(1_700_000_000_123.0), Some(micros));
        assert_eq!(epoch_to_micros(1_700_000_000_123_000.0), Some(micros));
        assert_eq!(epoch_to_micros(1_700_000_000_123_000_000.0), Some(micros));
        assert_eq!(epoch_to_micros(0.0), None);
        assert_eq!(epoch_to_micros(-5.0), None);
        assert_eq!(epoch_to_micros(f64::NAN), None);
        assert_eq!(of_json(&serde_json::json!("1700000000123")), Some(micros));
        assert_eq!(of_json(&serde_json::json!("2023-11-14 22:13:20.123")), Some(micros));
        assert_eq!(of_json(&serde_json::json!("2023-11-14T22:13:20.123Z")), Some(micros));
        assert_eq!(of_json(&serde_json::json!(true)), None);
        assert_eq!(of_record(&serde_json::json!({"msg": "x", "ts": 1_700_000_000.123})), Some(micros));
        assert_eq!(of_record(&serde_json::json!({"eventTime": "2023-11-14T22:13:20.123Z"})), Some(micros));
        assert_eq!(of_record(&serde_json::json!({"when": 1})), None);
    }

    #[test]
    fn a_prefix_reports_its_length() {
        assert_eq!(parse_prefix("2024-08-01T13:47:16.263Z\tabc").map(|(_, len)| len), Some(24));
        assert_eq!(parse_prefix("2024/08/01 13:47:16 hello").map(|(_, len)| len), Some(19));
    }
}
