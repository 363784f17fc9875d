//! The TOML configuration (`--config`, `COLDTRAIL_CONFIG`); `coldtrail.example.toml` documents every key.
//! Unknown keys are errors, and every problem is reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub query: QueryConfig,
    #[serde(default)]
    pub alerting: alerting::AlertingConfig,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub sources: Vec<ingest::sources::SourceConfig>,
    #[serde(default)]
    pub detect: DetectSettings,
}

/// How the live detections treat event time.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectSettings {
    /// How long after its event time a row may arrive and still be scored in order (`15m` by default,
    /// Firehose's longest buffering). Later rows are stored and counted as late.
    pub lateness: Option<String>,
    /// How far past the clock a row's event time may move the watermark (`5m` by default): a row
    /// stamped in the future by a broken clock must not make every later row late.
    pub future_skew: Option<String>,
    /// How long an account's CloudTrail is watched before the first-seen detections (a new deployer,
    /// layer or role) report (`7d` by default; `0s` reports from the first event).
    pub learning: Option<String>,
    /// With Kafka sources, the processes of a deployment split detection into this many partitions (each
    /// a share of the functions; partition 0 also has CloudTrail), handed out by a consumer group over
    /// `topic`. 1 (the default): one process detects at a time, the others take over when it goes.
    pub partitions: Option<u32>,
    /// The detection group's topic (`coldtrail-detect`); it carries no records.
    pub topic: Option<String>,
}

impl DetectSettings {
    /// The live detections' configuration; `problems` has said what is wrong with it.
    pub fn live(&self) -> detect::runner::LiveConfig {
        let mut live = detect::runner::LiveConfig::default();
        if let Some(lateness) = self.lateness.as_deref().and_then(store::time::parse_duration_micros) {
            live.lateness_us = lateness;
        }
        if let Some(skew) = self.future_skew.as_deref().and_then(store::time::parse_duration_micros) {
            live.future_skew_us = skew;
        }
        live
    }

    /// With a Kafka source, how this process joins the cluster's detection.
    pub fn membership(
        &self,
        sources: &[ingest::sources::SourceConfig],
    ) -> Option<ingest::membership::MembershipConfig> {
        ingest::membership::MembershipConfig::detection(sources, self.topic.as_deref(), self.partitions.unwrap_or(1))
    }

    /// The detections' configuration.
    pub fn engine(&self) -> detect::engine::EngineConfig {
        let engine = detect::engine::EngineConfig::default();
        match self.learning.as_deref().and_then(store::time::parse_duration_micros) {
            Some(learning) => engine.with_learning(learning),
            None => engine,
        }
    }

    fn problems(&self) -> Vec<String> {
        [("lateness", &self.lateness), ("future_skew", &self.future_skew), ("learning", &self.learning)]
            .into_iter()
            .filter_map(|(key, value)| {
                let text = value.as_deref()?;
                store::time::parse_duration_micros(text)
                    .is_none()
                    .then(|| format!("detect.{key} {text:?} is not a duration like 15m"))
            })
            .collect()
    }
}

/// Where and how the store keeps what serve ingests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Segments and ledgers: a directory or `s3://bucket/prefix` shared by every process of a
    /// deployment (`--location` overrides it).
    pub location: Option<String>,
    /// Hot rows older than this are sealed into a segment (and become visible to the other processes).
    pub flush_after_secs: Option<f64>,
    /// How often the other processes' new segments are looked for.
    pub refresh_secs: Option<f64>,
}

impl StoreSettings {
    pub fn refresh_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.refresh_secs.unwrap_or(5.0))
    }

    /// The store configuration of `paths` with these settings applied.
    pub fn apply(&self, paths: &crate::commands::Paths) -> store::StoreConfig {
        let mut config = paths.store_config();
        if config.location.is_none() {
            config.location = self.location.clone();
        }
        if let Some(secs) = self.flush_after_secs {
            config.flush.partition_age_max = std::time::Duration::from_secs_f64(secs);
        }
        config
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// PostgreSQL-protocol listen address.
    pub pg_listen: SocketAddr,
    /// HTTP API listen address.
    pub http_listen: SocketAddr,
    /// Seconds a statement may run.
    pub statement_timeout_secs: u64,
    /// Most rows one HTTP response (any format) or CLI result holds.
    pub max_result_rows: usize,
    /// Most bytes one HTTP response carries (HTTP streams results: this caps what one caller is sent,
    /// not what the server holds).
    pub max_result_mb: usize,
    /// Most concurrent PostgreSQL connections.
    pub max_connections: usize,
    /// Statements running at once (more wait for a slot).
    pub max_concurrent_queries: usize,
    /// Memory (MiB) that running statements may hold together for sorts, joins and aggregations.
    pub memory_limit_mb: usize,
    /// Memory (MiB) of segments' bloom filters kept for lookups by key; 0 keeps none.
    pub key_filter_cache_mb: usize,
    /// PEM certificate chain and private key: TLS on both servers when set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// With TLS configured, still accept PostgreSQL logins without it (off: they are refused).
    pub allow_plaintext: bool,
    pub users: Vec<query::UserSpec>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            pg_listen: "127.0.0.1:5433".parse().expect("a socket address"),
            http_listen: "127.0.0.1:8080".parse().expect("a socket address"),
            statement_timeout_secs: 300,
            max_result_rows: 1_000_000,
            max_result_mb: 256,
            max_connections: 256,
            max_concurrent_queries: 16,
            memory_limit_mb: 2048,
            key_filter_cache_mb: 1024,
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            users: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a configuration text and checks it; the error lists every problem.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let mut problems = Vec::new();
        let q = &config.query;
        if q.tls_cert.is_some() != q.tls_key.is_some() {
            problems.push("query.tls_cert and query.tls_key go together".to_string());
        }
        if q.statement_timeout_secs == 0 {
            problems.push("query.statement_timeout_secs must be at least 1".to_string());
        }
        if q.max_result_rows == 0
            || q.max_result_mb == 0
            || q.max_connections == 0
            || q.max_concurrent_queries == 0
            || q.memory_limit_mb == 0
        {
            problems.push(
                "query.max_result_rows, max_result_mb, max_connections, max_concurrent_queries and memory_limit_mb must be at least 1"
                    .to_string(),
            );
        }
        if q.pg_listen == q.http_listen {
            problems.push(format!("query.pg_listen and query.http_listen are both {}", q.pg_listen));
        }
        if let Err(e) = query::Users::from_specs(&q.users) {
            problems.push(e.to_string());
        }
        problems.extend(config.alerting.problems());
        problems.extend(ingest::sources::problems(&config.sources));
        problems.extend(config.detect.problems());
        for (key, value) in
            [("flush_after_secs", config.store.flush_after_secs), ("refresh_secs", config.store.refresh_secs)]
        {
            if value.is_some_and(|v| v.is_nan() || v < 0.1) {
                problems.push(format!("store.{key} must be at least 0.1"));
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            anyhow::bail!("{origin}: {}", problems.join("; "))
        }
    }

    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            None => Ok(Config::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                Config::parse(&text, &path.display().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses() {
        std::env::set_var("COLDTRAIL_ALICE_PASSWORD", "example-password");
        std::env::set_var("COLDTRAIL_INGEST_TOKEN", "example-ingest-token-0123456789");
        let text = include_str!("../coldtrail.example.toml");
        let config = Config::parse(text, "coldtrail.example.toml").unwrap();
        assert_eq!(config.query.pg_listen.port(), 5433);
        assert!(!config.query.users.is_empty());
        assert_eq!(config.alerting.destinations.len(), 4);
        assert_eq!(config.alerting.suppress.len(), 1);
        assert_eq!(config.alerting.ledger.as_ref().and_then(|l| l.destination.as_deref()), Some("soc-webhook"));
        let kinds: Vec<_> = config.sources.iter().map(|s| s.kind).collect();
        use ingest::sources::SourceKind::{Cloudwatch, Http, Kafka, S3};
        assert_eq!(kinds, vec![Kafka, S3, S3, Cloudwatch, Http]);
        assert_eq!(config.store.flush_after_secs, Some(60.0));
    }

    #[test]
    fn unknown_keys_and_every_problem_are_reported() {
        let err = Config::parse("[query]\npg_lisen = \"127.0.0.1:1\"\n", "x").unwrap_err().to_string();
        assert!(err.contains("pg_lisen"), "{err}");
        let text = "[query]\nstatement_timeout_secs = 0\ntls_cert = \"a.pem\"\npg_listen = \"127.0.0.1:9\"\nhttp_listen = \"127.0.0.1:9\"\n";
        let err = Config::parse(text, "x").unwrap_err().to_string();
        for part in ["tls_key go together", "statement_timeout_secs", "both 127.0.0.1:9"] {
            assert!(err.contains(part), "{err}");
        }
        let text = "[[alerting.destinations]]\nname = \"a\"\nkind = \"pagerduty\"\nurl = \"ftp://x\"\n\n[[alerting.suppress]]\nuntil = \"soon\"\nreason = \"r\"\n";
        let err = Config::parse(text, "x").unwrap_err().to_string();
        for part in ["not http(s)", "needs routing_key", "not an RFC 3339 time"] {
            assert!(err.contains(part), "{err}");
        }
        let err = Config::parse("[[alerting.destinations]]\nname = \"a\"\nkind = \"email\"\nurl = \"http://x\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("email"), "{err}");
    }
}
