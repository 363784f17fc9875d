//! Input positions: stored with the rows of each append, checkpointed to the location, and published per
//! consumer group so that the processes of a group agree where each partition was stored up to.

use super::*;

/// The durable position checkpoint: positions as of WAL sequence `wal_seq`.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct PositionsCheckpoint {
    pub(super) wal_seq: u64,
    pub(super) positions: BTreeMap<String, u64>,
}

impl Store {
    /// The stored position of every input stream: where reading resumes.
    pub fn positions(&self) -> BTreeMap<String, u64> {
        lock(&self.state).positions.clone()
    }

    pub fn position(&self, stream: &str) -> Option<u64> {
        lock(&self.state).positions.get(stream).copied()
    }

    /// Publishes this node's positions of the streams starting with `prefix` (a consumer group's
    /// partitions, say) to the shared location, where the group's other nodes read them
    /// (`shared_positions`): several nodes consuming one group into one location agree on where each
    /// partition was stored up to, whatever their commits to the source did.
    pub async fn publish_positions(&self, group: &str, prefix: &str) -> Result<()> {
        let positions: BTreeMap<String, u64> = {
            let state = lock(&self.state);
            state
                .positions
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let bytes =
            serde_json::to_vec(&positions).map_err(|e| StoreError::Internal(format!("positions encode: {e}")))?;
        self.location.put(&shared_positions_path(group, &self.node), bytes.into()).await
    }

    /// The highest position of every stream any node published for `group`.
    pub async fn shared_positions(&self, group: &str) -> Result<BTreeMap<String, u64>> {
        let mut merged: BTreeMap<String, u64> = BTreeMap::new();
        for object in self.location.list(&format!("_positions/groups/{}", group_key(group))).await? {
            let bytes = self.location.get(object.location.as_ref()).await?;
            let positions: BTreeMap<String, u64> = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::PositionsCorrupt { path: object.location.to_string(), reason: e.to_string() }
            })?;
            for (stream, offset) in positions {
                let entry = merged.entry(stream).or_insert(offset);
                *entry = (*entry).max(offset);
            }
        }
        Ok(merged)
    }
}

/// A group name as one path segment.
/// A consumer group's name as one path segment: other characters than letters, digits, `-`, `_` and `.`
/// become `_`, and a name of dots only (`..` would climb out of the groups' directory) gets a `_` first.
pub(super) fn group_key(group: &str) -> String {
    let key: String =
        group.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if key.chars().all(|c| c == '.') {
        format!("_{key}")
    } else {
        key
    }
}

pub(super) fn shared_positions_path(group: &str, node: &str) -> String {
    format!("_positions/groups/{}/{node}.json", group_key(group))
}

pub(super) fn positions_path(node: &str) -> String {
    format!("_positions/{node}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_name_becomes_one_safe_path_segment() {
        assert_eq!(group_key("coldtrail-prod_1.a"), "coldtrail-prod_1.a");
        assert_eq!(group_key("../../etc"), ".._.._etc");
        assert_eq!(shared_positions_path("a/b c", "n1"), "_positions/groups/a_b_c/n1.json");
        assert!(!group_key("x/y\\z").contains(['/', '\\']));
        assert_eq!(group_key(".."), "_..");
        assert_eq!(group_key(""), "_");
        assert_eq!(shared_positions_path("..", "n1"), "_positions/groups/_../n1.json");
    }
}
