//! Subscribers to durable appends (`Store::subscribe`): bounded channels, a full one blocks only the
//! appends of its tables.

use super::*;

/// Rows of one append, as a subscriber receives them: the WAL sequence number and the batches of the
/// subscribed tables.
#[derive(Debug, Clone)]
pub struct Appended {
    pub seq: u64,
    pub batches: Vec<(Table, RecordBatch)>,
}

pub(super) struct Tap {
    pub(super) tables: Vec<Table>,
    /// `None` once the receiver is gone. Locked per tap while sending: a full channel blocks the appends
    /// of its tables only, never the appends that other subscribers wait for.
    pub(super) sender: Mutex<Option<std::sync::mpsc::SyncSender<Appended>>>,
}

impl Store {
    /// Delivers the rows of every append of `tables`, once durable, to the returned receiver (concurrent
    /// appends may arrive in either order; `Appended::seq` tells). The channel holds `capacity` appends;
    /// when it is full, appending waits for the subscriber (backpressure, never loss). Dropping the
    /// receiver ends the subscription. A subscriber must not wait for its own appends of subscribed
    /// tables while the channel is full.
    pub fn subscribe(&self, tables: &[Table], capacity: usize) -> std::sync::mpsc::Receiver<Appended> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity.max(1));
        lock(&self.taps).push(Arc::new(Tap { tables: tables.to_vec(), sender: Mutex::new(Some(sender)) }));
        receiver
    }

    pub(super) fn deliver(&self, seq: u64, batches: &[(Table, RecordBatch)]) {
        // The list is locked only to pick the taps: a subscriber whose channel is full blocks this
        // append, but not the appends of other tables (the detection thread storing its alerts while an
        // ingest waits for it to take invocations, say).
        let taps: Vec<Arc<Tap>> = {
            let taps = lock(&self.taps);
            taps.iter().filter(|tap| batches.iter().any(|(table, _)| tap.tables.contains(table))).cloned().collect()
        };
        let mut gone = false;
        for tap in taps {
            let wanted: Vec<(Table, RecordBatch)> =
                batches.iter().filter(|(table, _)| tap.tables.contains(table)).cloned().collect();
            let mut sender = lock(&tap.sender);
            if let Some(channel) = sender.as_ref() {
                if channel.send(Appended { seq, batches: wanted }).is_err() {
                    *sender = None;
                    gone = true;
                }
            }
        }
        if gone {
            lock(&self.taps).retain(|tap| lock(&tap.sender).is_some());
        }
    }
}
