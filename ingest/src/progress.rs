//! Progress of a long ingest on a terminal: bytes read of the bytes to read, records per second, and the
//! time left, redrawn on one line a few times a second as chunks are read (not only per file, so a single
//! large file shows it too).
//!
//! The estimate is the bytes still to read at the rate of this run: files skipped because they were
//! ingested before, and the part of a file an interrupted ingest already stored, leave the total when they
//! are skipped, so they neither count as work done nor slow the rate.

use std::io::Write;
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// Counts at one moment of an ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Input bytes read in this run (of the files as stored on disk, so gzip'd bytes for gzip files).
    pub bytes_read: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub files: u64,
}

/// The progress line of one ingest.
pub struct Progress {
    /// Bytes this run is expected to read; `None` for input of unknown size (stdin).
    total_bytes: Option<u64>,
    started: Instant,
    drawn: Option<Instant>,
    out: Box<dyn Write + Send>,
}

impl Progress {
    /// A progress line for `total_bytes` of input (`None` when unknown), drawn on `out` (stderr).
    pub fn new(total_bytes: Option<u64>, out: Box<dyn Write + Send>) -> Progress {
        Progress { total_bytes, started: Instant::now(), drawn: None, out }
    }

    /// `bytes` of the total will not be read in this run (a file ingested before, the stored part of a
    /// resumed file).
    pub fn skip(&mut self, bytes: u64) {
        if let Some(total) = &mut self.total_bytes {
            *total = total.saturating_sub(bytes);
        }
    }

    /// Redraws the line if it was not redrawn in the last quarter second.
    pub fn update(&mut self, now: &Snapshot) {
        if self.drawn.is_some_and(|at| at.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.draw(now);
    }

    /// Draws the line once more, whatever the time, and ends it.
    pub fn finish(&mut self, now: &Snapshot) {
        self.draw(now);
        // Progress is best effort: a closed stderr must not fail the ingest.
        let _ = writeln!(self.out);
    }

    fn draw(&mut self, now: &Snapshot) {
        self.drawn = Some(Instant::now());
        let text = line(now, self.total_bytes, self.started.elapsed());
        let _ = write!(self.out, "\r{text}   ");
        let _ = self.out.flush();
    }
}

/// The progress line: `40.2 of 80.0 MB (50%), 3 files, 210,000 records (84,000/s), 0 dead letters,
/// 16.1 MB/s, ETA 0:03`.
pub fn line(now: &Snapshot, total_bytes: Option<u64>, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let rate = now.bytes_read as f64 / seconds;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let read = match total_bytes {
        Some(total) if total > 0 => {
            let done = now.bytes_read.min(total);
            format!("{:.1} of {:.1} MB ({}%)", mb(done), mb(total), done * 100 / total)
        }
        _ => format!("{:.1} MB", mb(now.bytes_read)),
    };
    let eta = match total_bytes {
        Some(total) if now.bytes_read >= total => "ETA 0:00".to_string(),
        Some(total) if now.bytes_read > 0 => clock((total - now.bytes_read) as f64 / rate),
        _ => "ETA -".to_string(),
    };
    format!(
        "{read}, {} files, {} records ({}/s), {} dead letters, {:.1} MB/s, {eta}",
        now.files,
        thousands(now.records),
        thousands((now.records as f64 / seconds) as u64),
        thousands(now.dead_letters),
        rate / 1e6,
    )
}

/// `ETA 1:05` (minutes and seconds) or `ETA 2:03:04` past an hour.
fn clock(seconds: f64) -> String {
    let total = seconds.ceil().min(1e9) as u64;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("ETA {hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("ETA {minutes}:{seconds:02}")
    }
}

fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_estimates_the_time_left_from_this_runs_rate() {
        let now = Snapshot { bytes_read: 40_000_000, records: 210_000, dead_letters: 3, files: 2 };
        let text = line(&now, Some(100_000_000), Duration::from_secs(4));
        // 10 MB/s, 60 MB left: 6 s.
        assert_eq!(
            text,
            "40.0 of 100.0 MB (40%), 2 files, 210,000 records (52,500/s), 3 dead letters, 10.0 MB/s, ETA 0:06"
        );
        let slow = line(&Snapshot { bytes_read: 1_000_000, ..now }, Some(4_601_000_000), Duration::from_secs(1));
        assert!(slow.ends_with("ETA 1:16:40"), "{slow}");
        let done = line(&Snapshot { bytes_read: 100_000_000, ..now }, Some(100_000_000), Duration::from_secs(9));
        assert!(done.contains("(100%)") && done.ends_with("ETA 0:00"), "{done}");
    }

    #[test]
    fn input_of_unknown_size_or_not_yet_read_has_no_estimate() {
        let now = Snapshot { bytes_read: 5_000_000, records: 1_234_567, ..Default::default() };
        let text = line(&now, None, Duration::from_secs(1));
        assert!(
            text.starts_with("5.0 MB, 0 files, 1,234,567 records (1,234,567/s)") && text.ends_with("ETA -"),
            "{text}"
        );
        let start = line(&Snapshot::default(), Some(10), Duration::from_millis(0));
        assert!(start.ends_with("ETA -"), "{start}");
    }

    #[test]
    fn skipped_bytes_leave_the_total_and_redraws_are_limited() {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut progress = Progress::new(Some(30_000_000), Box::new(Shared(buffer.clone())));
        progress.skip(20_000_000);
        let now = Snapshot { bytes_read: 5_000_000, ..Default::default() };
        progress.update(&now);
        progress.update(&now);
        progress.finish(&now);
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\r').count(), 2, "the second update came within a quarter second: {text:?}");
        assert!(text.contains("5.0 of 10.0 MB (50%)"), "{text}");
        assert!(text.ends_with('\n'));
    }
}
