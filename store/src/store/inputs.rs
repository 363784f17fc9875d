//! Event-time progress of partitioned inputs (the Kafka partitions a process holds), for the detection
//! watermark. Within one partition records come in (about) event-time order; across partitions they do
//! not: a backlog is read faster from one partition than from another. So event time is complete only up
//! to the minimum, over the partitions held, of the newest event time stored from each (as Flink and
//! Beam combine per-partition watermarks). A partition that delivers nothing for the idle time no longer
//! holds it back; one assigned that has delivered nothing yet holds it back until then.

use std::time::{Duration, Instant};

use super::*;

pub(super) struct InputProgress {
    newest_us: Option<i64>,
    /// When the partition was assigned or last delivered rows.
    active_at: Instant,
}

impl Store {
    /// A partitioned input (`kafka:<topic>/<partition>`) is now held by this process.
    pub fn input_open(&self, stream: &str) {
        let mut inputs = lock(&self.inputs);
        let input =
            inputs.entry(stream.to_string()).or_insert(InputProgress { newest_us: None, active_at: Instant::now() });
        input.active_at = Instant::now();
    }

    /// The input is no longer held (revoked): it no longer holds the watermark back here.
    pub fn input_close(&self, stream: &str) {
        lock(&self.inputs).remove(stream);
    }

    /// Rows up to `newest_us` of event time were stored from the input.
    pub fn input_note(&self, stream: &str, newest_us: i64) {
        let mut inputs = lock(&self.inputs);
        let input =
            inputs.entry(stream.to_string()).or_insert(InputProgress { newest_us: None, active_at: Instant::now() });
        input.newest_us = Some(input.newest_us.map_or(newest_us, |n| n.max(newest_us)));
        input.active_at = Instant::now();
    }

    /// Event time through which every input held and active within `idle_after` has delivered: the
    /// minimum of their newest event times (`i64::MIN` while one of them has delivered nothing yet).
    /// `None` when no input holds it back.
    pub fn input_watermark(&self, idle_after: Duration) -> Option<i64> {
        lock(&self.inputs)
            .values()
            .filter(|input| input.active_at.elapsed() < idle_after)
            .map(|input| input.newest_us.unwrap_or(i64::MIN))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_input_watermark_is_the_slowest_active_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).await.unwrap();
        let idle = Duration::from_secs(60);
        assert_eq!(store.input_watermark(idle), None);
        store.input_open("kafka:t/0");
        store.input_open("kafka:t/1");
        assert_eq!(store.input_watermark(idle), Some(i64::MIN), "partition 1 has delivered nothing yet");
        store.input_note("kafka:t/0", 500);
        store.input_note("kafka:t/1", 200);
        store.input_note("kafka:t/1", 100);
        assert_eq!(store.input_watermark(idle), Some(200));
        store.input_close("kafka:t/1");
        assert_eq!(store.input_watermark(idle), Some(500));
        assert_eq!(store.input_watermark(Duration::ZERO), None, "idle partitions do not hold it back");
    }
}
