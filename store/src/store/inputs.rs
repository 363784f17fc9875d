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
    /// The same, in wall-clock microseconds (for other processes).
    active_at_us: i64,
    /// Held now (assigned and not revoked).
    held: bool,
}

/// What one process knows of an input partition's progress, for the other processes of a cluster: the
/// newest event time it stored from it and when it last delivered (or was assigned), wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputMark {
    pub newest_us: Option<i64>,
    pub active_at_us: i64,
}

impl InputMark {
    /// The later knowledge of one partition from two processes: event time only grows along a partition
    /// (its next holder continues from the stored positions).
    pub fn merge(self, other: InputMark) -> InputMark {
        InputMark {
            newest_us: self.newest_us.max(other.newest_us),
            active_at_us: self.active_at_us.max(other.active_at_us),
        }
    }
}

/// Adds `more` marks to `marks`, merging those of the same partition.
pub fn merge_marks(marks: &mut BTreeMap<String, InputMark>, more: impl IntoIterator<Item = (String, InputMark)>) {
    for (stream, mark) in more {
        let merged = marks.get(&stream).map_or(mark, |known| known.merge(mark));
        marks.insert(stream, merged);
    }
}

/// Event time through which every partition known in `marks` and active within `idle_after` of `now_us`
/// has delivered (`i64::MIN` while one has delivered nothing yet); `None` when none holds it back.
pub fn marks_watermark<'a>(
    marks: impl IntoIterator<Item = &'a InputMark>,
    now_us: i64,
    idle_after: Duration,
) -> Option<i64> {
    marks
        .into_iter()
        .filter(|mark| now_us.saturating_sub(mark.active_at_us) < idle_after.as_micros() as i64)
        .map(|mark| mark.newest_us.unwrap_or(i64::MIN))
        .min()
}

fn fresh() -> InputProgress {
    InputProgress { newest_us: None, active_at: Instant::now(), active_at_us: crate::time::now_micros(), held: true }
}

impl Store {
    /// A partitioned input (`kafka:<topic>/<partition>`) is now held by this process.
    pub fn input_open(&self, stream: &str) {
        let mut inputs = lock(&self.inputs);
        let input = inputs.entry(stream.to_string()).or_insert_with(fresh);
        input.active_at = Instant::now();
        input.active_at_us = crate::time::now_micros();
        input.held = true;
    }

    /// A partitioned input exists (a partition of a consumed topic), held here or not: until some
    /// process delivers from it, it holds the cluster's watermark back (`input_marks`, `marks_watermark`),
    /// or until it has been idle as long as the watermark allows. Does nothing for a known input.
    pub fn input_known(&self, stream: &str) {
        lock(&self.inputs).entry(stream.to_string()).or_insert_with(|| InputProgress { held: false, ..fresh() });
    }

    /// The input is no longer held (revoked): it no longer holds the watermark back here, but its mark
    /// stays (`input_marks`) until another process carries it further.
    pub fn input_close(&self, stream: &str) {
        if let Some(input) = lock(&self.inputs).get_mut(stream) {
            input.held = false;
        }
    }

    /// Rows up to `newest_us` of event time were stored from the input.
    pub fn input_note(&self, stream: &str, newest_us: i64) {
        let mut inputs = lock(&self.inputs);
        let input = inputs.entry(stream.to_string()).or_insert_with(fresh);
        input.newest_us = Some(input.newest_us.map_or(newest_us, |n| n.max(newest_us)));
        input.active_at = Instant::now();
        input.active_at_us = crate::time::now_micros();
    }

    /// Every input this process has held since it started, held now or not, as other processes of a
    /// cluster combine them: a partition revoked here and not yet delivering elsewhere (a rebalance, a
    /// killed holder) still holds the cluster's watermark back at what was stored from it.
    pub fn input_marks(&self) -> BTreeMap<String, InputMark> {
        lock(&self.inputs)
            .iter()
            .map(|(stream, input)| {
                (stream.clone(), InputMark { newest_us: input.newest_us, active_at_us: input.active_at_us })
            })
            .collect()
    }

    /// Event time through which every input held and active within `idle_after` has delivered: the
    /// minimum of their newest event times (`i64::MIN` while one of them has delivered nothing yet).
    /// `None` when no input holds it back.
    pub fn input_watermark(&self, idle_after: Duration) -> Option<i64> {
        lock(&self.inputs)
            .values()
            .filter(|input| input.held && input.active_at.elapsed() < idle_after)
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
        let marks = store.input_marks();
        assert_eq!(marks["kafka:t/1"].newest_us, Some(200), "a revoked partition keeps its mark for the cluster");
        let now = crate::time::now_micros();
        assert_eq!(marks_watermark(marks.values(), now, idle), Some(200));
        assert_eq!(marks_watermark(marks.values(), now + 61_000_000, idle), None, "idle marks hold nothing back");
        assert_eq!(store.input_watermark(Duration::ZERO), None, "idle partitions do not hold it back");
    }
}
