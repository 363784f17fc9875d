//! Deduplication of alerts before they are stored: alerts of the same detector and entity within one
//! window of event time (tumbling, aligned to the epoch) become one alert, counted, with its first and last
//! seen. The group's id comes from the detector, the entity and the window, never from which of its alerts
//! came first, so a replay in another order groups and names exactly as the stream did. The first alert of
//! a group is let through at once (stored, then delivered) under the group's id; when newer alerts show the
//! window is over, a row with the same id carries the final count and the first and last seen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::alert_id;
use crate::Alert;

/// Most open groups; the oldest is closed early beyond it.
const GROUPS_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    alert: Alert,
    count: i64,
    first_us: i64,
    last_us: i64,
    /// The count of the group's last row stored (`flush`): a row is stored again only when it grew.
    #[serde(default)]
    stored: i64,
}

/// An open group as checkpointed (with the learned state, so that a restart continues its count
/// instead of storing a second first row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenGroup {
    window_start_us: i64,
    detector: String,
    entity: String,
    group: Group,
}

/// Groups alerts of one detector and entity per window.
pub struct Deduplicator {
    window_us: i64,
    /// (window start, detector, entity) → group; ordered by window so the ended ones come first.
    groups: BTreeMap<(i64, String, String), Group>,
}

impl Deduplicator {
    pub fn new(window_us: i64) -> Self {
        Deduplicator { window_us: window_us.max(1), groups: BTreeMap::new() }
    }

    /// Takes the alerts raised and returns those to store now: the first of each group (under the
    /// group's id), and the final rows of groups whose window has ended.
    pub fn admit(&mut self, alerts: Vec<Alert>) -> Vec<Alert> {
        let mut out = Vec::new();
        let mut newest = i64::MIN;
        for mut alert in alerts {
            newest = newest.max(alert.ts_us);
            let entity = alert.entity.clone().or_else(|| alert.function.clone()).unwrap_or_default();
            let window = alert.ts_us.div_euclid(self.window_us) * self.window_us;
            let first_us = alert.window_start_us.min(alert.ts_us);
            let last_us = alert.window_end_us.max(alert.ts_us);
            let key = (window, alert.detector.clone(), entity);
            if let Some(group) = self.groups.get_mut(&key) {
                group.count += alert.count.max(1);
                group.first_us = group.first_us.min(first_us);
                group.last_us = group.last_us.max(last_us);
                continue;
            }
            if self.groups.len() >= GROUPS_MAX {
                if let Some((_, done)) = self.groups.pop_first() {
                    out.extend(finish(done));
                }
            }
            alert.alert_id = alert_id(&key.1, &format!("{}\u{1}group", key.2), window);
            out.push(alert.clone());
            let count = alert.count.max(1);
            self.groups.insert(key, Group { alert, count, first_us, last_us, stored: count });
        }
        if newest > i64::MIN {
            out.extend(self.close_until(newest));
        }
        out
    }

    /// Final rows of groups whose window ended at or before `now_us`.
    pub fn close_until(&mut self, now_us: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        while let Some(entry) = self.groups.first_entry() {
            if entry.key().0.saturating_add(self.window_us) > now_us {
                break;
            }
            out.extend(finish(entry.remove()));
        }
        out
    }

    /// Final rows of every open group (at stop or at the end of a replay).
    pub fn close_all(&mut self) -> Vec<Alert> {
        self.close_until(i64::MAX)
    }

    pub fn open_groups(&self) -> usize {
        self.groups.len()
    }

    /// The current rows of the open groups that grew since their last row was stored, without closing
    /// them (at stop: the stored rows are up to date, and the groups go on counting after a restart).
    pub fn flush(&mut self) -> Vec<Alert> {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            if let Some(row) = row_of(group) {
                group.stored = group.count;
                out.push(row);
            }
        }
        out
    }

    /// The open groups, for a checkpoint.
    pub fn checkpoint(&self) -> Vec<OpenGroup> {
        self.groups
            .iter()
            .map(|((window_start_us, detector, entity), group)| OpenGroup {
                window_start_us: *window_start_us,
                detector: detector.clone(),
                entity: entity.clone(),
                group: group.clone(),
            })
            .collect()
    }

    /// Reopens checkpointed groups (replacing any open now).
    pub fn restore(&mut self, groups: Vec<OpenGroup>) {
        self.groups = groups
            .into_iter()
            .take(GROUPS_MAX)
            .map(|open| ((open.window_start_us, open.detector, open.entity), open.group))
            .collect();
    }
}

/// One alert per id, in the order ids first appear, each its latest row (a group's final count).
pub fn latest_by_id(alerts: Vec<Alert>) -> Vec<Alert> {
    let mut position: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<Alert> = Vec::with_capacity(alerts.len());
    for alert in alerts {
        match position.get(&alert.alert_id) {
            Some(&i) => out[i] = alert,
            None => {
                position.insert(alert.alert_id.clone(), out.len());
                out.push(alert);
            }
        }
    }
    out
}

/// The final row of a group that grew since its last stored row; a group of one was stored as it came.
fn finish(group: Group) -> Option<Alert> {
    row_of(&group)
}

/// The group's row with its count and first and last seen, when it grew since its last stored row.
fn row_of(group: &Group) -> Option<Alert> {
    if group.count <= group.stored.max(group.alert.count.max(1)) {
        return None;
    }
    let mut alert = group.alert.clone();
    alert.count = group.count;
    alert.window_start_us = group.first_us;
    alert.window_end_us = group.last_us;
    alert.ts_us = group.last_us.max(alert.ts_us);
    Some(alert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::alert_id;
    use crate::Severity;

    fn alert(detector: &str, entity: &str, ts_us: i64, n: i64) -> Alert {
        Alert {
            ts_us,
            alert_id: alert_id(detector, entity, n),
            detector: detector.into(),
            severity: Severity::High,
            title: "t".into(),
            function: Some("f".into()),
            entity: Some(entity.into()),
            window_start_us: ts_us,
            window_end_us: ts_us,
            score: 1.0,
            count: 1,
            observed: serde_json::json!({}),
            expected: serde_json::json!({}),
            evidence: vec![],
            attack_ids: vec![],
            query: String::new(),
            entities: Vec::new(),
        }
    }

    #[test]
    fn a_burst_of_a_thousand_findings_is_one_alert_with_its_count() {
        let mut dedup = Deduplicator::new(600_000_000);
        let burst: Vec<Alert> =
            (0..1_000).map(|i| alert("injection.sql", "orders-api", 1_000_000 + i * 1_000, i)).collect();
        let first = dedup.admit(burst);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].count, 1);
        let last = dedup.close_all();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].alert_id, first[0].alert_id);
        assert_eq!(last[0].count, 1_000);
        assert_eq!((last[0].window_start_us, last[0].window_end_us), (1_000_000, 1_000_000 + 999_000));
    }

    #[test]
    fn a_group_flushed_at_stop_and_checkpointed_goes_on_counting_after_a_restart() {
        let mut dedup = Deduplicator::new(600_000_000);
        let first = dedup.admit((0..3).map(|i| alert("injection.sql", "orders-api", 1_000 + i, i)).collect());
        assert_eq!(first.len(), 1);
        let flushed = dedup.flush();
        assert_eq!((flushed.len(), flushed[0].count), (1, 3));
        assert!(dedup.flush().is_empty(), "nothing grew since");
        let saved = serde_json::to_string(&dedup.checkpoint()).unwrap();
        let mut restarted = Deduplicator::new(600_000_000);
        restarted.restore(serde_json::from_str(&saved).unwrap());
        assert!(restarted.admit(vec![alert("injection.sql", "orders-api", 2_000, 9)]).is_empty(), "the same group");
        let last = restarted.close_all();
        assert_eq!((last.len(), last[0].count, last[0].alert_id.clone()), (1, 4, first[0].alert_id.clone()));
        // Closed with nothing new since the flush: no second copy of the row.
        let mut idle = Deduplicator::new(600_000_000);
        idle.restore(serde_json::from_str(&saved).unwrap());
        assert!(idle.close_all().is_empty());
    }

    #[test]
    fn other_entities_and_later_windows_are_other_alerts() {
        let mut dedup = Deduplicator::new(600_000_000);
        let out = dedup.admit(vec![
            alert("injection.sql", "a", 0, 0),
            alert("injection.sql", "b", 1, 1),
            alert("trail.stopped", "a", 2, 2),
            alert("injection.sql", "a", 3, 3),
            // The next window: a new alert, and the first group's final row (count 2).
            alert("injection.sql", "a", 700_000_000, 4),
        ]);
        let summary: Vec<(String, i64)> = out.iter().map(|a| (a.alert_id.clone(), a.count)).collect();
        assert_eq!(out.len(), 5, "{summary:?}");
        assert_eq!((out[4].alert_id.clone(), out[4].count), (out[0].alert_id.clone(), 2), "{summary:?}");
        assert_ne!(out[3].alert_id, out[0].alert_id);
        assert!(dedup.close_all().is_empty(), "groups of one need no final row");
    }

    #[test]
    fn the_group_id_does_not_depend_on_arrival_order() {
        let alerts: Vec<Alert> = (0..5).map(|i| alert("callers.new", "f", i * 1_000, i)).collect();
        let forward = Deduplicator::new(600_000_000).admit(alerts.clone());
        let backward = Deduplicator::new(600_000_000).admit(alerts.into_iter().rev().collect());
        assert_eq!(forward[0].alert_id, backward[0].alert_id);
    }
}
