//! Suppressions that admins add while coldtrail runs (`CALL suppress(...)`, the console's admin page),
//! beside those of the configuration: one JSON document in the shared location
//! (`_config/suppressions.json`), so that every process's outbox reads the same list. An alert a
//! suppression holds is stored and recorded `suppressed` with the reason, never sent. The document is
//! small and rewritten whole; two admins changing it at the same instant may lose one change (the call
//! that lost is still in the audit).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::location::Location;

/// Where the document lives in the location.
pub const PATH: &str = "_config/suppressions.json";
/// Suppressions held at most: a document past it is refused rather than read slowly at every alert.
pub const SUPPRESSIONS_MAX: usize = 1_000;

/// One suppression added at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeSuppression {
    pub id: String,
    /// Detector id prefix (`callers.`); none: every detector.
    pub detector: Option<String>,
    pub function: Option<String>,
    /// A principal (or any part of the alert's entity).
    pub principal: Option<String>,
    /// RFC 3339: the suppression ends then.
    pub until: String,
    pub reason: String,
    pub added_by: String,
    pub added_at: String,
}

/// The suppressions added at run time (none when the document does not exist).
///
/// # Errors
/// When the location cannot be read or the document is not a list of suppressions.
pub async fn read(location: &Location) -> Result<Vec<RuntimeSuppression>> {
    let Some(bytes) = location.get_opt(PATH).await? else { return Ok(Vec::new()) };
    serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Internal(format!("{PATH} is not a list of suppressions: {e}")))
}

/// Replaces the suppressions added at run time.
///
/// # Errors
/// When there are more than `SUPPRESSIONS_MAX` or the location cannot be written.
pub async fn write(location: &Location, suppressions: &[RuntimeSuppression]) -> Result<()> {
    if suppressions.len() > SUPPRESSIONS_MAX {
        return Err(StoreError::Internal(format!("at most {SUPPRESSIONS_MAX} suppressions; lift some first")));
    }
    let bytes = serde_json::to_vec_pretty(suppressions).expect("suppressions serialise");
    location.put(PATH, bytes.into()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn suppressions_round_trip_through_the_location() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::open(dir.path().to_str().unwrap()).unwrap();
        assert!(read(&location).await.unwrap().is_empty());
        let one = RuntimeSuppression {
            id: "s1".into(),
            detector: Some("callers.".into()),
            function: None,
            principal: None,
            until: "2030-01-01T00:00:00Z".into(),
            reason: "onboarding".into(),
            added_by: "root".into(),
            added_at: "2026-12-01T00:00:00Z".into(),
        };
        write(&location, std::slice::from_ref(&one)).await.unwrap();
        assert_eq!(read(&location).await.unwrap(), vec![one.clone()]);
        let many = vec![one; SUPPRESSIONS_MAX + 1];
        assert!(write(&location, &many).await.is_err());
    }
}
