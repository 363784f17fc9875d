//! The sources a long-running process reads continuously (`[[sources]]` in `coldtrail serve`'s
//! configuration): Kafka consumer groups, object-store prefixes polled for new objects (CloudWatch Logs
//! exports, CloudTrail files), and an HTTP endpoint (CloudWatch subscription payloads, Firehose, OTLP). Each
//! runs as a task that retries on errors with a backoff; every one stores through one `StoreSink`. At
//! `Sources::stop` every source stops taking input, stores what it holds with its positions, and returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::IngestError;
use crate::kafka::{KafkaConfig, KafkaSource, TopicConfig};
use crate::pipeline::{Format, Pipeline};
use crate::s3::S3Source;
use crate::sink::StoreSink;

/// One configured source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Names the source in logs and metrics.
    pub name: String,
    pub kind: SourceKind,
    /// Input format of the records or objects (auto, lambda, subscription, export, cloudtrail, xray,
    /// otlp); a Kafka topic may say its own as `topic:format`.
    pub format: Option<String>,
    /// Log group of plain log lines that do not name theirs.
    pub log_group: Option<String>,
    // kafka
    pub brokers: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    /// librdkafka settings (`security.protocol`, `sasl.mechanism`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    // s3 (and the polling of cloudwatch)
    pub url: Option<String>,
    pub poll_secs: Option<f64>,
    // cloudwatch: log group name prefixes (`/aws/lambda/` when none), where a group never read starts
    // (`7d` ago by default), and the overlap re-read behind each group's position (300 s).
    #[serde(default)]
    pub prefixes: Vec<String>,
    pub since: Option<String>,
    pub overlap_secs: Option<f64>,
    // http
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Kafka,
    S3,
    Http,
    /// An OTLP/HTTP receiver: the http source under the name OpenTelemetry users look for (the same
    /// endpoint serves `/ingest`, `/v1/traces` and `/v1/logs`).
    Otlp,
    /// Log groups read through the CloudWatch Logs API (`logs_api`).
    Cloudwatch,
}

pub const DEFAULT_GROUP: &str = "coldtrail";
const DEFAULT_POLL_SECS: f64 = 60.0;

impl SourceConfig {
    fn format(&self) -> Format {
        self.format.as_deref().and_then(|f| f.parse().ok()).unwrap_or(Format::Auto)
    }

    /// The Kafka topics and their formats.
    fn topic_configs(&self) -> Result<Vec<TopicConfig>, String> {
        self.topics
            .iter()
            .map(|spec| {
                let (topic, format) = match spec.split_once(':') {
                    Some((topic, format)) => (topic, format.parse::<Format>()?),
                    None => (spec.as_str(), self.format()),
                };
                if topic.is_empty() {
                    return Err(format!("topic {spec:?} has no name"));
                }
                Ok(TopicConfig { topic: topic.to_string(), format, log_group: self.log_group.clone() })
            })
            .collect()
    }

    fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| self.token_env.as_deref().and_then(|name| std::env::var(name).ok()))
    }

    /// Everything wrong with this source, each problem once.
    pub fn problems(&self) -> Vec<String> {
        let at = format!("sources.{}", self.name);
        let mut problems = Vec::new();
        if self.name.is_empty() {
            problems.push("a source needs a name".to_string());
        }
        if let Some(format) = &self.format {
            if let Err(e) = format.parse::<Format>() {
                problems.push(format!("{at}.format: {e}"));
            }
        }
        let foreign = |field: &str, set: bool, owner: &str| set.then(|| format!("{at}.{field} is a {owner} setting"));
        let kafka_fields = [
            ("brokers", self.brokers.is_some()),
            ("group", self.group.is_some()),
            ("topics", !self.topics.is_empty()),
            ("options", !self.options.is_empty()),
        ];
        let s3_fields = [("url", self.url.is_some())];
        let cloudwatch_fields = [
            ("prefixes", !self.prefixes.is_empty()),
            ("since", self.since.is_some()),
            ("overlap_secs", self.overlap_secs.is_some()),
        ];
        if !matches!(self.kind, SourceKind::S3 | SourceKind::Cloudwatch) && self.poll_secs.is_some() {
            problems.push(format!("{at}.poll_secs is an s3 or cloudwatch setting"));
        }
        if self.kind != SourceKind::Cloudwatch {
            problems.extend(cloudwatch_fields.iter().filter_map(|(f, set)| foreign(f, *set, "cloudwatch")));
        }
        let http_fields = [
            ("listen", self.listen.is_some()),
            ("token", self.token.is_some()),
            ("token_env", self.token_env.is_some()),
        ];
        if self.kind != SourceKind::Kafka {
            problems.extend(kafka_fields.iter().filter_map(|(f, set)| foreign(f, *set, "kafka")));
        }
        if self.kind != SourceKind::S3 {
            problems.extend(s3_fields.iter().filter_map(|(f, set)| foreign(f, *set, "s3")));
        }
        if !matches!(self.kind, SourceKind::Http | SourceKind::Otlp) {
            problems.extend(http_fields.iter().filter_map(|(f, set)| foreign(f, *set, "http")));
        }
        match self.kind {
            SourceKind::Kafka => {
                if self.brokers.as_deref().is_none_or(str::is_empty) {
                    problems.push(format!("{at}: a kafka source needs brokers"));
                }
                if self.topics.is_empty() {
                    problems.push(format!("{at}: a kafka source needs topics"));
                }
                if let Err(e) = self.topic_configs() {
                    problems.push(format!("{at}.topics: {e}"));
                }
            }
            SourceKind::S3 => {
                match self.url.as_deref() {
                    None => problems.push(format!("{at}: an s3 source needs url")),
                    Some(url) if !(url.starts_with("s3://") || url.starts_with('/') || url.starts_with("file://")) => {
                        problems.push(format!("{at}.url {url:?}: expected s3://bucket/prefix or a local directory"))
                    }
                    Some(_) => {}
                }
                if self.poll_secs.is_some_and(|s| s.is_nan() || s < 0.1) {
                    problems.push(format!("{at}.poll_secs must be at least 0.1"));
                }
            }
            SourceKind::Cloudwatch => {
                if self.since.as_deref().is_some_and(|since| store::time::parse_duration_micros(since).is_none()) {
                    problems.push(format!("{at}.since: expected a duration like 7d or 12h"));
                }
                if self.overlap_secs.is_some_and(|s| s.is_nan() || s < 0.0) {
                    problems.push(format!("{at}.overlap_secs must be at least 0"));
                }
                if self.poll_secs.is_some_and(|s| s.is_nan() || s < 0.1) {
                    problems.push(format!("{at}.poll_secs must be at least 0.1"));
                }
            }
            SourceKind::Http | SourceKind::Otlp => {
                if self.listen.is_none() {
                    problems.push(format!("{at}: an http source needs listen"));
                }
                match self.token() {
                    None => problems.push(format!(
                        "{at}: an http source needs token or token_env (naming a set environment variable)"
                    )),
                    Some(token) if token.chars().count() < crate::http::TOKEN_CHARS_MIN => problems.push(format!(
                        "{at}: the ingest token must have at least {} characters",
                        crate::http::TOKEN_CHARS_MIN
                    )),
                    Some(_) => {}
                }
            }
        }
        problems
    }
}

/// Problems of the whole list: each source's, and duplicate names or listen addresses.
pub fn problems(sources: &[SourceConfig]) -> Vec<String> {
    let mut problems: Vec<String> = sources.iter().flat_map(SourceConfig::problems).collect();
    let mut names = std::collections::BTreeSet::new();
    let mut listens = std::collections::BTreeSet::new();
    for source in sources {
        if !names.insert(&source.name) {
            problems.push(format!("two sources are named {:?}", source.name));
        }
        if let Some(listen) = source.listen {
            if !listens.insert(listen) {
                problems.push(format!("two sources listen on {listen}"));
            }
        }
    }
    problems
}

/// The running sources.
pub struct Sources {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<(String, tokio::task::JoinHandle<()>)>,
    /// One line per source saying what it reads, for the operator.
    pub described: Vec<String>,
}

fn errors_metric() -> &'static prometheus::IntCounterVec {
    &crate::metrics::metrics().source_errors
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Sleeps, or returns `true` early when asked to stop.
async fn pause(rx: &tokio::sync::watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stopped(rx.clone()) => true,
    }
}

impl Sources {
    /// Starts every source. Listeners are bound here, so that a taken port fails the start.
    pub async fn start(configs: &[SourceConfig], sink: StoreSink) -> Result<Sources, IngestError> {
        let problems = problems(configs);
        if !problems.is_empty() {
            return Err(IngestError::Config(problems.join("; ")));
        }
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let mut described = Vec::new();
        for config in configs.iter().cloned() {
            errors_metric().with_label_values(&[&config.name]);
            let name = config.name.clone();
            let label = name.clone();
            let task = match config.kind {
                SourceKind::Kafka => {
                    described.push(format!(
                        "source {name}: kafka {} topics {} (group {})",
                        config.brokers.as_deref().unwrap_or(""),
                        config.topics.join(","),
                        config.group.as_deref().unwrap_or(DEFAULT_GROUP)
                    ));
                    tokio::spawn(run_kafka(config, sink.clone(), stop_rx.clone()))
                }
                SourceKind::S3 => {
                    described.push(format!(
                        "source {name}: {} every {} s",
                        config.url.as_deref().unwrap_or(""),
                        poll_secs(&config)
                    ));
                    tokio::spawn(run_s3(config, sink.clone(), stop_rx.clone()))
                }
                SourceKind::Cloudwatch => {
                    let api = crate::logs_api::LogsApi::from_env()?;
                    let since = since_micros(&config);
                    let mut prefixes = config.prefixes.clone();
                    if prefixes.is_empty() {
                        prefixes.push("/aws/lambda/".to_string());
                    }
                    described.push(format!(
                        "source {name}: CloudWatch Logs groups {} every {} s",
                        prefixes.join(", "),
                        poll_secs(&config)
                    ));
                    let source = crate::logs_api::CloudWatchSource::new(
                        api,
                        crate::logs_api::LogsApiConfig {
                            prefixes,
                            since_ms: since / 1000,
                            overlap: config
                                .overlap_secs
                                .map_or(crate::logs_api::OVERLAP_DEFAULT, Duration::from_secs_f64),
                            poll: Duration::from_secs_f64(poll_secs(&config)),
                        },
                    );
                    tokio::spawn(source.run(sink.clone(), name.clone(), stop_rx.clone()))
                }
                SourceKind::Http | SourceKind::Otlp => {
                    let listen = config.listen.expect("problems() requires listen of an http source");
                    let listener = tokio::net::TcpListener::bind(listen)
                        .await
                        .map_err(|e| IngestError::Listen { address: format!("{listen} (source {name})"), source: e })?;
                    let bound = listener
                        .local_addr()
                        .map_err(|e| IngestError::Listen { address: format!("{listen} (source {name})"), source: e })?;
                    described.push(format!(
                        "source {name}: POST http://{bound}/ingest, OTLP/HTTP at http://{bound}/v1/traces and /v1/logs"
                    ));
                    let token = config.token().expect("problems() requires the token of an http source");
                    let router = crate::http::router(sink.clone(), token)?;
                    let rx = stop_rx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped(rx)).await {
                            errors_metric().with_label_values(&[&name]).inc();
                            tracing::error!(source = %name, error = %e, "http source stopped");
                        }
                    })
                }
            };
            tasks.push((label, task));
        }
        Ok(Sources { stop, tasks, described })
    }

    /// Stops taking input; returns once every source has stored what it holds.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(source = %name, error = %e, "source task failed");
            }
        }
    }
}

/// Where the groups of a cloudwatch source never read before start, microseconds since the epoch.
fn since_micros(config: &SourceConfig) -> i64 {
    let back = config.since.as_deref().and_then(store::time::parse_duration_micros).unwrap_or(7 * 86_400_000_000);
    store::time::now_micros() - back
}

fn poll_secs(config: &SourceConfig) -> f64 {
    config.poll_secs.unwrap_or(DEFAULT_POLL_SECS)
}

async fn run_kafka(config: SourceConfig, sink: StoreSink, stop: tokio::sync::watch::Receiver<bool>) {
    let name = config.name.clone();
    let topics = config.topic_configs().expect("checked");
    let mut kafka = KafkaConfig::new(
        config.brokers.clone().unwrap_or_default(),
        config.group.clone().unwrap_or_else(|| DEFAULT_GROUP.to_string()),
        topics,
    );
    kafka.client_options = config.options.clone();
    let mut delay = Duration::from_secs(1);
    loop {
        let result = match KafkaSource::new(sink.clone(), kafka.clone()) {
            Ok(mut source) => {
                let result = source.run(stopped(stop.clone())).await;
                // Closing leaves the group (a rebalance); librdkafka blocks for it.
                let _ = tokio::task::spawn_blocking(move || drop(source)).await;
                result
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(stats) => {
                tracing::info!(source = %name, records = stats.stored_records, "kafka source stopped");
                if *stop.borrow() {
                    return;
                }
            }
            Err(e) => {
                errors_metric().with_label_values(&[&name]).inc();
                tracing::error!(source = %name, error = %e, "kafka source failed; restarting");
            }
        }
        if pause(&stop, delay).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

async fn run_s3(config: SourceConfig, sink: StoreSink, stop: tokio::sync::watch::Receiver<bool>) {
    let name = config.name.clone();
    let every = Duration::from_secs_f64(poll_secs(&config));
    let source = loop {
        match S3Source::new(config.url.as_deref().unwrap_or(""), config.format(), config.log_group.clone()) {
            Ok(source) => break source,
            Err(e) => {
                errors_metric().with_label_values(&[&name]).inc();
                tracing::error!(source = %name, error = %e, "cannot open the s3 source; retrying");
                if pause(&stop, Duration::from_secs(30)).await {
                    return;
                }
            }
        }
    };
    let mut pipeline = Pipeline::default();
    loop {
        // A poll stores every object it reads before it returns: stopping between polls loses nothing.
        match source.poll(&sink, &mut pipeline).await {
            Ok(stats) if stats.objects_ingested > 0 => {
                tracing::info!(source = %name, objects = stats.objects_ingested, bytes = stats.bytes, "objects ingested")
            }
            Ok(_) => {}
            Err(e) => {
                errors_metric().with_label_values(&[&name]).inc();
                tracing::error!(source = %name, error = %e, "s3 poll failed; retrying at the next poll");
            }
        }
        if pause(&stop, every).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SourceConfig> {
        #[derive(Deserialize)]
        struct Wrapper {
            sources: Vec<SourceConfig>,
        }
        toml::from_str::<Wrapper>(text).unwrap().sources
    }

    #[test]
    fn each_kind_names_what_it_lacks_and_what_is_not_its_own() {
        let sources = parse(
            r#"
            [[sources]]
            name = "k"
            kind = "kafka"
            url = "s3://x"
            topics = ["a:nonsense", ":lambda"]

            [[sources]]
            name = "s"
            kind = "s3"
            url = "ftp://x"
            poll_secs = 0.0
            listen = "127.0.0.1:1"

            [[sources]]
            name = "h"
            kind = "http"
            listen = "127.0.0.1:1"
            token = "short"

            [[sources]]
            name = "h"
            kind = "http"
            listen = "127.0.0.1:1"
            token_env = "COLDTRAIL_TEST_UNSET_TOKEN_VARIABLE"
            prefixes = ["/aws/lambda/"]

            [[sources]]
            name = "c"
            kind = "cloudwatch"
            since = "last tuesday"
            overlap_secs = -1.0
            poll_secs = 0.0
            "#,
        );
        let all = problems(&sources).join("\n");
        for part in [
            "sources.k.url is a s3 setting",
            "sources.k: a kafka source needs brokers",
            "sources.k.topics:",
            "sources.s.url \"ftp://x\"",
            "sources.s.poll_secs",
            "sources.s.listen is a http setting",
            "at least 16 characters",
            "needs token or token_env",
            "two sources are named \"h\"",
            "two sources listen on 127.0.0.1:1",
            "sources.h.prefixes is a cloudwatch setting",
            "sources.c.since: expected a duration",
            "sources.c.overlap_secs must be at least 0",
            "sources.c.poll_secs must be at least 0.1",
        ] {
            assert!(all.contains(part), "{part:?} missing from:\n{all}");
        }
    }

    #[test]
    fn topics_take_their_own_format_or_the_sources() {
        let sources = parse(
            r#"
            [[sources]]
            name = "k"
            kind = "kafka"
            brokers = "b:9092"
            format = "lambda"
            topics = ["logs", "trail:cloudtrail"]
            "#,
        );
        assert!(problems(&sources).is_empty(), "{:?}", problems(&sources));
        let topics = sources[0].topic_configs().unwrap();
        assert_eq!((topics[0].topic.as_str(), topics[0].format), ("logs", Format::Lambda));
        assert_eq!((topics[1].topic.as_str(), topics[1].format), ("trail", Format::CloudTrail));
    }
}
