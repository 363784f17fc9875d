//! Membership of a Kafka consumer group, used for its assignments only: the partitions of a topic that
//! carries no records stand for units of work (detection partitions, `detect::cluster`), and the group
//! hands them out among the live processes, moves them when one joins, leaves or dies (after the session
//! timeout), and never gives one to two members at once. Kafka already does this well for the ingest
//! consumers; nothing of the kind is written here.
//!
//! The callbacks run on the membership's own thread, inside librdkafka's rebalance: a revocation is
//! reported (and its work stopped and checkpointed by the callback) before the group hands the partition
//! to its next owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientConfig;

use crate::error::IngestError;

/// A change of the partitions this member holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

type OnChange = Box<dyn Fn(Change) + Send + Sync>;

struct Context {
    on_change: OnChange,
    held: Mutex<BTreeSet<u32>>,
}

impl rdkafka::ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<u32> = list.elements().iter().map(|e| e.partition() as u32).collect();
            self.held.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| !partitions.contains(p));
            (self.on_change)(Change::Revoked(partitions));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions: Vec<u32> = list.elements().iter().map(|e| e.partition() as u32).collect();
            self.held.lock().unwrap_or_else(|e| e.into_inner()).extend(partitions.iter().copied());
            (self.on_change)(Change::Assigned(partitions));
        }
    }
}

/// Where and how to join.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub brokers: String,
    pub group: String,
    pub topic: String,
    /// The topic's partitions: created with this many when missing; an existing topic must have as many.
    pub partitions: i32,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Further librdkafka settings (`security.protocol`, ...), applied last.
    pub client_options: BTreeMap<String, String>,
}

impl MembershipConfig {
    /// The detection group of a deployment whose sources include a Kafka consumer group: the first Kafka
    /// source's brokers, options and group (`<group>.detect`), over `topic` (`coldtrail-detect`) with
    /// `partitions` partitions. `None` without a Kafka source.
    pub fn detection(
        sources: &[crate::sources::SourceConfig],
        topic: Option<&str>,
        partitions: u32,
    ) -> Option<MembershipConfig> {
        let kafka = sources.iter().find(|s| s.kind == crate::sources::SourceKind::Kafka)?;
        Some(MembershipConfig {
            brokers: kafka.brokers.clone()?,
            group: format!("{}.detect", kafka.group.as_deref().unwrap_or(crate::sources::DEFAULT_GROUP)),
            topic: topic.unwrap_or("coldtrail-detect").to_string(),
            partitions: partitions.clamp(1, 1_024) as i32,
            session_timeout: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(1),
            client_options: kafka.options.clone(),
        })
    }
}

/// A running membership; `stop` reports the partitions held as revoked and leaves the group.
pub struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Creates the topic if it is missing, joins the group and starts the thread that serves its
    /// rebalances. `on_change` is called for every assignment and revocation.
    pub fn start(
        config: &MembershipConfig,
        on_change: impl Fn(Change) + Send + Sync + 'static,
    ) -> Result<Membership, IngestError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", config.heartbeat_interval.as_millis().to_string());
        for (key, value) in &config.client_options {
            client.set(key, value);
        }
        ensure_topic(&client, &config.topic, config.partitions)?;
        let context = Context { on_change: Box::new(on_change), held: Mutex::new(BTreeSet::new()) };
        let consumer: BaseConsumer<Context> = client
            .create_with_context(context)
            .map_err(|e| IngestError::Kafka(format!("kafka membership consumer: {e}")))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|e| IngestError::Kafka(format!("joining group {} on {}: {e}", config.group, config.topic)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("membership".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::SeqCst) {
                        // No records come: polling serves the group's heartbeats and rebalances.
                        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
                            tracing::debug!(error = %e, "membership poll");
                        }
                    }
                    let held: Vec<u32> = {
                        let mut held = consumer.context().held.lock().unwrap_or_else(|e| e.into_inner());
                        std::mem::take(&mut *held).into_iter().collect()
                    };
                    if !held.is_empty() {
                        (consumer.context().on_change)(Change::Revoked(held));
                    }
                    consumer.unsubscribe();
                    // Dropping the consumer leaves the group, so the others take the partitions at once.
                }
            })
            .map_err(|e| IngestError::Kafka(format!("cannot start the membership thread: {e}")))?;
        Ok(Membership { stop, thread: Some(thread) })
    }

    /// Reports what is held as revoked (the callback stops that work) and leaves the group.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Creates `topic` with `partitions` if it does not exist; an existing one must have that many.
fn ensure_topic(client: &ClientConfig, topic: &str, partitions: i32) -> Result<(), IngestError> {
    let fail = |what: String| IngestError::Kafka(format!("detection topic {topic}: {what}"));
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client.create().map_err(|e| fail(format!("admin client: {e}")))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    // On a thread of its own with a runtime of its own: this is called from async code, where no runtime
    // may be entered.
    let created = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Ok::<_, std::io::Error>(runtime.block_on(admin.create_topics([&new], &options)))
            })
            .join()
    })
    .map_err(|_| fail("create: the admin thread panicked".into()))?
    .map_err(|e| fail(format!("runtime: {e}")))?;
    // A broker that refuses or does not serve topic creation may still have the topic (created by an
    // operator): the metadata below decides.
    match created {
        Ok(results) => {
            for result in results {
                if let Err((_, code)) = result {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        tracing::warn!(topic, error = %code, "detection topic not created; looking for it");
                    }
                }
            }
        }
        Err(e) => tracing::warn!(topic, error = %e, "detection topic not created; looking for it"),
    }
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| fail(format!("metadata: {e}")))?;
    let found = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len() as i32);
    if found == 0 {
        return Err(fail(format!(
            "does not exist and could not be created: create it with {partitions} partitions (it carries no records)"
        )));
    }
    if found != partitions {
        return Err(fail(format!(
            "has {found} partitions, not the {partitions} configured ([detect] partitions): each stands for a share of the functions, so the count cannot change under a running cluster; use a new topic name to change it"
        )));
    }
    Ok(())
}
