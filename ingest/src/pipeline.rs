//! The ingest pipeline: detects the format of each input unit (a file, an object, a Kafka message, an
//! HTTP body), decodes it, and builds rows of every table, with every rejected record kept as a
//! dead letter. It does no IO: sources hand it bytes and store the batches it returns.

use std::collections::BTreeMap;
use std::io::Read;

use arrow::array::RecordBatch;
use base64::Engine;
use serde_json::Value as Json;
use store::Table;

use crate::assemble::{Assembler, AssemblyStats, Origin};
use crate::cloudwatch::{export_stream_of_key, function_of_group, Subscription};
use crate::events::{self, Event};
use crate::lambda::{self, Message};
use crate::scan::{self, Head};
use crate::{cloudtrail, timestamp, trace};
use store::rows::{bounded, TableBuilder};
use store::tables::{Borrowed, DeadLetterRow, LogRow};

/// One log message (CloudWatch caps events at 256 KiB); longer ones are dead letters.
pub const LINE_BYTES_MAX: usize = 256 * 1024;
/// Decompressed bytes of one input unit.
pub const DECOMPRESSED_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Raw bytes kept with a dead letter.
pub const DEAD_LETTER_RAW_BYTES_MAX: usize = 64 * 1024;
/// Nesting of encodings (base64 in JSON in gzip in base64 ...) followed before giving up.
const DECODE_DEPTH_MAX: usize = 4;

/// The input format of a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Detect per unit (and per line of NDJSON).
    Auto,
    /// Lambda log lines, text or JSON format, optionally prefixed by a timestamp (export objects,
    /// `aws logs tail`).
    Lambda,
    /// CloudWatch Logs subscription payloads.
    Subscription,
    /// CloudWatch Logs export-to-S3 objects.
    Export,
    /// CloudTrail files or events.
    CloudTrail,
    /// X-Ray segment documents.
    XRay,
    /// OTLP/JSON traces.
    Otlp,
    /// CloudWatch Logs events as tools write them: NDJSON of events, pages of `aws logs
    /// filter-log-events` or `get-log-events`, Logs Insights results as JSON or CSV.
    Events,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "auto" => Format::Auto,
            "lambda" => Format::Lambda,
            "subscription" | "cloudwatch" => Format::Subscription,
            "export" => Format::Export,
            "cloudtrail" => Format::CloudTrail,
            "xray" => Format::XRay,
            "otlp" => Format::Otlp,
            "events" => Format::Events,
            other => {
                return Err(format!(
                    "unknown format {other:?}: auto, lambda, subscription, export, cloudtrail, xray, otlp, events"
                ))
            }
        })
    }
}

/// Where a unit comes from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unit<'a> {
    /// The input stream: `file:/path`, `s3://bucket/key`, `kafka:topic/3`, `http`, `stdin`.
    pub source: &'a str,
    /// The unit's position in its stream (offset, line).
    pub position: &'a str,
    /// The file name or object key, which names the log stream of export objects.
    pub key: Option<&'a str>,
    /// The log group, when the source knows it and the data does not say.
    pub log_group: Option<&'a str>,
}

/// Counts of what a pipeline has seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestStats {
    pub units: u64,
    pub bytes: u64,
    pub log_lines: u64,
    pub cloudtrail_events: u64,
    pub spans: u64,
    pub control_messages: u64,
    /// Log lines with no time of their own, given the time of the line before them.
    pub times_inferred: u64,
    /// Log lines with no time of their own and none before them, given the time of the ingest.
    pub times_of_ingest: u64,
    pub dead_letters: BTreeMap<&'static str, u64>,
    pub assembly: AssemblyStats,
}

impl IngestStats {
    pub fn dead_letters_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    /// Records read: log lines, CloudTrail events, spans and dead letters.
    pub fn records(&self) -> u64 {
        self.log_lines + self.cloudtrail_events + self.spans + self.dead_letters_total()
    }

    /// What the summary of an ingest says of log lines that had no time of their own, if there were any.
    pub fn borrowed_times_note(&self) -> Option<String> {
        (self.times_inferred + self.times_of_ingest > 0).then(|| {
            format!(
                "log lines without a time of their own: {} given a neighbouring line's time, {} the time of the \
                 ingest (their format says which: text+inferred_time, text+ingest_time, ...)",
                self.times_inferred, self.times_of_ingest
            )
        })
    }

    /// Adds what was counted since `before` to the process's metrics.
    fn publish_since(&self, before: &IngestStats, pending: usize) {
        let metrics = crate::metrics::metrics();
        let delta = |a: u64, b: u64| b.saturating_sub(a);
        metrics.records.with_label_values(&["log_line"]).inc_by(delta(before.log_lines, self.log_lines));
        metrics
            .records
            .with_label_values(&["cloudtrail"])
            .inc_by(delta(before.cloudtrail_events, self.cloudtrail_events));
        metrics.records.with_label_values(&["span"]).inc_by(delta(before.spans, self.spans));
        metrics.bytes.inc_by(delta(before.bytes, self.bytes));
        for (reason, count) in &self.dead_letters {
            let was = before.dead_letters.get(reason).copied().unwrap_or(0);
            metrics.dead_letters.with_label_values(&[reason]).inc_by(count - was);
        }
        metrics.invocations_emitted.inc_by(delta(before.assembly.emitted, self.assembly.emitted));
        metrics.invocations_evicted.inc_by(delta(before.assembly.evicted, self.assembly.evicted));
        metrics.pending_invocations.set(pending as i64);
    }
}

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Most invocations awaiting their missing parts at once.
    pub pending_invocations_max: usize,
    /// How far event time must move past an invocation's last part before it is emitted incomplete.
    pub assembly_grace_micros: i64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { pending_invocations_max: 100_000, assembly_grace_micros: 15 * 60 * 1_000_000 }
    }
}

/// Log context of a message.
#[derive(Clone, Copy, Debug, Default)]
struct Context<'a> {
    log_group: Option<&'a str>,
    log_stream: Option<&'a str>,
    account: Option<&'a str>,
    /// The request the line belongs to when the record around it says (an OTLP log record's
    /// `faas.invocation_id`) and the line does not.
    request_id: Option<&'a str>,
}

pub struct Pipeline {
    logs: TableBuilder,
    invocations: TableBuilder,
    cloudtrail: TableBuilder,
    spans: TableBuilder,
    dead_letters: TableBuilder,
    assembler: Assembler,
    /// The latest event time seen: drives emission of incomplete invocations.
    watermark_micros: i64,
    /// The log stream that the unit being read belongs to, when its source or key names one.
    unit_stream: Option<String>,
    /// The time of the last line of this unit that had one, and of the first one that has one: what a
    /// line without a time of its own is given.
    unit_last_ts: Option<i64>,
    unit_first_ts: Option<i64>,
    pub stats: IngestStats,
    /// The stats as last added to the metrics.
    reported: IngestStats,
    /// The events of the subscription payload read last, their buffers reused for the next.
    scratch: scan::Scratch,
    /// Batches built elsewhere (trail files read by `FileSource`'s workers), in input order after the
    /// builders' rows of the same table that came before them.
    ready: Vec<(Table, RecordBatch)>,
}

/// The rows of one trail file, read off the pipeline (`Pipeline::trail_file_rows`) on another thread.
pub struct TrailRows {
    batch: Option<RecordBatch>,
    records: usize,
    /// The unit's bytes as read (gzip'd when the file is).
    bytes: usize,
}

/// Whether a unit may be cut at line ends without changing what it decodes to: lines of text or NDJSON,
/// not gzip, base64 of gzip, or one JSON document (an array, or an object spanning lines).
pub fn splits_at_lines(bytes: &[u8]) -> bool {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let body = &bytes[start..];
    if is_gzip(bytes) || body.starts_with(b"H4sI") || body.starts_with(b"[") || events::is_insights_csv(body) {
        return false;
    }
    if body.starts_with(b"{") {
        let first_line = body.split(|b| *b == b'\n').next().unwrap_or(body);
        return body.len() > first_line.len() && serde_json::from_slice::<serde::de::IgnoredAny>(first_line).is_ok();
    }
    true
}

pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses gzip (also concatenated members), refusing to go past `DECOMPRESSED_BYTES_MAX`.
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    gunzip_at_most(bytes, DECOMPRESSED_BYTES_MAX)
}

/// Decompresses gzip (also concatenated members), refusing to go past `max` bytes.
pub fn gunzip_at_most(bytes: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(64 * 1024 * 1024).min(max));
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    let read = decoder.take(max as u64 + 1).read_to_end(&mut out).map_err(|e| format!("broken gzip: {e}"))?;
    if read > max {
        return Err(format!("gzip expands past {max} bytes"));
    }
    Ok(out)
}

/// Whether a unit's first bytes (decompressed, when it is gzip) may begin a trail file, `{"Records"`:
/// a look at 4 KiB, so that a unit that is not one (a log export object) is not decompressed whole for
/// nothing before the pipeline reads it.
fn may_start_trail_file(bytes: &[u8]) -> bool {
    const LOOK: usize = 4096;
    let mut decompressed = Vec::new();
    let head = if is_gzip(bytes) {
        // A broken member shows in what it gives; the whole unit is read later anyway.
        let _ = flate2::read::MultiGzDecoder::new(bytes).take(LOOK as u64).read_to_end(&mut decompressed);
        &decompressed[..]
    } else {
        &bytes[..bytes.len().min(LOOK)]
    };
    let head = head.trim_ascii_start();
    match head.strip_prefix(b"{") {
        Some(rest) => {
            let rest = rest.trim_ascii_start();
            rest.len() < b"\"Records\"".len() || rest.starts_with(b"\"Records\"")
        }
        // Nothing but whitespace so far: undecided.
        None => head.is_empty(),
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new(PipelineConfig::default())
    }
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            logs: TableBuilder::new(Table::Logs),
            invocations: TableBuilder::new(Table::Invocations),
            cloudtrail: TableBuilder::new(Table::Cloudtrail),
            spans: TableBuilder::new(Table::Spans),
            dead_letters: TableBuilder::new(Table::DeadLetters),
            assembler: Assembler::new(config.pending_invocations_max, config.assembly_grace_micros),
            watermark_micros: i64::MIN,
            unit_stream: None,
            unit_last_ts: None,
            unit_first_ts: None,
            stats: IngestStats::default(),
            reported: IngestStats::default(),
            scratch: scan::Scratch::default(),
            ready: Vec::new(),
        }
    }

    fn builders(&self) -> [&TableBuilder; 5] {
        [&self.logs, &self.invocations, &self.cloudtrail, &self.spans, &self.dead_letters]
    }

    /// Rows built and not yet taken.
    pub fn buffered_rows(&self) -> usize {
        self.builders().iter().map(|b| b.rows()).sum::<usize>()
            + self.ready.iter().map(|(_, b)| b.num_rows()).sum::<usize>()
    }

    /// Approximate text bytes built and not yet taken.
    pub fn buffered_bytes(&self) -> usize {
        self.builders().iter().map(|b| b.bytes()).sum::<usize>()
            + self.ready.iter().map(|(_, b)| b.get_array_memory_size()).sum::<usize>()
    }

    /// Invocations waiting for missing parts.
    pub fn pending_invocations(&self) -> usize {
        self.assembler.pending()
    }

    /// Takes every row built so far, one batch per table.
    pub fn take_batches(&mut self) -> Vec<(Table, RecordBatch)> {
        self.stats.assembly = self.assembler.stats;
        self.stats.publish_since(&self.reported, self.assembler.pending());
        self.reported = self.stats.clone();
        let mut batches = std::mem::take(&mut self.ready);
        batches.extend(
            [&mut self.logs, &mut self.invocations, &mut self.cloudtrail, &mut self.spans, &mut self.dead_letters]
                .into_iter()
                .filter_map(|builder| builder.finish().map(|batch| (builder.table(), batch))),
        );
        batches
    }

    /// The rows of `bytes`, one unit that `ingest` would read as a plain trail file
    /// (`cloudtrail::read_trail_file`, no `Json` tree), built into `builder` without a pipeline, so
    /// that another thread can read it: exactly what `ingest` would build, or `None` when `ingest`
    /// would read it any other way (a subscription payload first, a tree, dead letters, broken gzip),
    /// and then the unit is left to `ingest`. Needs no state: a trail file's rows depend on it alone.
    pub fn trail_file_rows(
        builder: &mut TableBuilder,
        format: Format,
        bytes: &[u8],
        unit: &Unit<'_>,
    ) -> Option<TrailRows> {
        if !matches!(format, Format::Auto | Format::CloudTrail) || !may_start_trail_file(bytes) {
            return None;
        }
        let decompressed;
        let plain = if is_gzip(bytes) {
            // One that expands past a chunk (a small file can expand a thousandfold) is left to `ingest`,
            // which reads a large document in pieces.
            decompressed = gunzip_at_most(bytes, crate::file::FILE_CHUNK_BYTES).ok()?;
            &decompressed[..]
        } else {
            bytes
        };
        let body = plain.trim_ascii_start();
        // `auto` tries a subscription payload first.
        let trail = format == Format::CloudTrail || (!sniffs_subscription(body) && cloudtrail::sniffs_trail_file(body));
        if !trail {
            return None;
        }
        let records = cloudtrail::read_trail_file(builder, body, unit.source, unit.position)?;
        Some(TrailRows { batch: builder.finish(), records, bytes: bytes.len() })
    }

    /// Takes a unit's rows that `trail_file_rows` read, in input order: as if `ingest` had read it now.
    pub fn add_trail_rows(&mut self, rows: TrailRows) {
        self.stats.units += 1;
        self.stats.bytes += rows.bytes as u64;
        self.stats.cloudtrail_events += rows.records as u64;
        if let Some(batch) = rows.batch {
            // After the rows the builder holds, which came before.
            if let Some(before) = self.cloudtrail.finish() {
                self.ready.push((Table::Cloudtrail, before));
            }
            self.ready.push((Table::Cloudtrail, batch));
        }
        self.end_unit();
    }

    /// What AWS delivers about one minute, parsed as a deployment receives it: CloudWatch Logs
    /// subscription payloads and X-Ray segment documents (sources `<source>-logs` and `<source>-xray`, through this pipeline, whose assembler keeps
    /// invocations that span minutes), and CloudTrail records (one trail file). `coldtrail demo`'s live time.
    pub fn ingest_minute(
        &mut self,
        source: &str,
        position: &str,
        payloads: &[&Json],
        segments: &[&Json],
        trail: &[Json],
    ) -> Vec<(Table, RecordBatch)> {
        let unit = Unit { source, position, key: None, log_group: None };
        let (logs, xray) = (format!("{source}-logs"), format!("{source}-xray"));
        for payload in payloads {
            self.ingest(Format::Subscription, payload.to_string().as_bytes(), &Unit { source: &logs, ..unit });
        }
        let traces: String = segments.iter().map(|s| format!("{s}\n")).collect();
        if !traces.is_empty() {
            self.ingest(Format::XRay, traces.as_bytes(), &Unit { source: &xray, ..unit });
        }
        let mut batches = self.take_batches();
        if !trail.is_empty() {
            let mut pipeline = Pipeline::new(PipelineConfig::default());
            let body = serde_json::json!({ "Records": trail }).to_string();
            pipeline.ingest(Format::Auto, body.as_bytes(), &unit);
            batches.extend(pipeline.take_batches());
        }
        batches
    }

    /// The input ended: emits every invocation still waiting for parts.
    pub fn finish(&mut self) {
        self.assembler.flush_all(&mut self.invocations);
        self.stats.assembly = self.assembler.stats;
    }

    /// Decodes one unit. Never fails: what cannot be decoded becomes dead letters.
    pub fn ingest(&mut self, format: Format, bytes: &[u8], unit: &Unit<'_>) {
        self.ingest_counted(format, bytes, bytes.len(), unit)
    }

    /// `ingest` of a unit that was gzip'd in `gzip_bytes` and is decompressed already (`plain`): the
    /// same rows and statistics as `ingest` of the gzip'd bytes.
    pub fn ingest_gunzipped(&mut self, format: Format, plain: &[u8], gzip_bytes: usize, unit: &Unit<'_>) {
        self.ingest_counted(format, plain, gzip_bytes, unit)
    }

    fn ingest_counted(&mut self, format: Format, bytes: &[u8], counted: usize, unit: &Unit<'_>) {
        self.stats.units += 1;
        self.stats.bytes += counted as u64;
        let context = resolve_context(unit);
        let unit = match &context {
            Some((group, _)) => Unit { log_group: Some(group), ..*unit },
            None => *unit,
        };
        self.unit_stream = context.as_ref().and_then(|(_, stream)| stream.clone());
        (self.unit_last_ts, self.unit_first_ts) = (None, None);
        self.decode(format, bytes, &unit, 0);
        self.unit_stream = None;
        self.end_unit();
    }

    /// A unit was read. Parts inside one unit come in any order (export objects are not time-ordered):
    /// invocations are completed only once the whole unit is read.
    fn end_unit(&mut self) {
        self.assembler.emit_completed(&mut self.invocations);
        self.assembler.flush_older_than(self.watermark_micros, &mut self.invocations);
    }

    /// Events read from the CloudWatch Logs API (`logs_api`): each a log line of `group` at its own time,
    /// its position its event id (which a re-read of the overlap drops by).
    pub fn ingest_api_events(&mut self, source: &str, group: &str, events: &[crate::logs_api::ApiEvent]) {
        self.stats.units += 1;
        let unit = Unit { source, position: "", key: None, log_group: Some(group) };
        (self.unit_last_ts, self.unit_first_ts) = (None, None);
        for api in events {
            self.stats.bytes += api.message.len() as u64;
            let event = Event {
                message: std::borrow::Cow::Borrowed(&api.message),
                ts: timestamp::millis_to_micros(api.timestamp_ms),
                log_group: Some(std::borrow::Cow::Borrowed(group)),
                log_stream: Some(std::borrow::Cow::Borrowed(&api.log_stream)),
                account: None,
            };
            self.event(&event, &unit, &api.event_id);
        }
        self.end_unit();
    }

    fn decode(&mut self, format: Format, bytes: &[u8], unit: &Unit<'_>, depth: usize) {
        if depth > DECODE_DEPTH_MAX {
            return self.dead_letter(
                "nesting_too_deep",
                "encodings nested too deeply",
                bytes,
                unit.source,
                unit.position,
            );
        }
        let decompressed;
        let bytes = if is_gzip(bytes) {
            match gunzip(bytes) {
                Ok(plain) => {
                    decompressed = plain;
                    &decompressed[..]
                }
                Err(error) => return self.dead_letter("gzip", &error, bytes, unit.source, unit.position),
            }
        } else {
            bytes
        };
        match format {
            Format::Auto => self.auto(bytes, unit, depth),
            Format::Lambda | Format::Export => self.text_lines(bytes, unit),
            Format::Subscription => self.subscription_bytes(bytes, unit),
            Format::Events => self.events(bytes, unit),
            Format::CloudTrail if self.read_trail_file(bytes.trim_ascii_start(), unit) => {}
            Format::CloudTrail | Format::XRay | Format::Otlp => match serde_json::from_slice::<Json>(bytes) {
                Ok(json) => self.document(format, &json, bytes, unit),
                Err(error) if !bytes.trim_ascii().contains(&b'\n') => self.json_error(&error, bytes, unit),
                // Newline-delimited documents (X-Ray daemon output, Firehose, `jq -c`): each line on its
                // own, a bad line a dead letter of its own.
                Err(_) => {
                    self.each_line(bytes, unit, |this, line, line_unit| match serde_json::from_slice::<Json>(line) {
                        Ok(json) => this.document(format, &json, line, line_unit),
                        Err(error) => this.json_error(&error, line, line_unit),
                    })
                }
            },
        }
    }

    fn document(&mut self, format: Format, json: &Json, bytes: &[u8], unit: &Unit<'_>) {
        match format {
            Format::CloudTrail => self.cloudtrail_json(json, bytes, unit),
            _ if json.get("resourceLogs").is_some() => self.otlp_logs(json, bytes, unit),
            _ => self.trace_json(json, bytes, unit),
        }
    }

    /// OTLP log records (`resourceLogs`): each a log line of the function its resource names, at its own
    /// time, joined to the request its attributes name.
    fn otlp_logs(&mut self, json: &Json, raw: &[u8], unit: &Unit<'_>) {
        let attributes = |value: Option<&Json>| -> serde_json::Map<String, Json> {
            let mut out = serde_json::Map::new();
            for attribute in value.and_then(|v| v.get("attributes")).and_then(Json::as_array).into_iter().flatten() {
                if let (Some(key), Some(value)) = (attribute.get("key").and_then(Json::as_str), attribute.get("value"))
                {
                    out.insert(key.to_string(), trace::otlp_value(value));
                }
            }
            out
        };
        let text = |map: &serde_json::Map<String, Json>, keys: &[&str]| -> Option<String> {
            keys.iter().find_map(|key| match map.get(*key)? {
                Json::String(text) => Some(text.clone()),
                Json::Array(items) => items.first()?.as_str().map(str::to_string),
                _ => None,
            })
        };
        let mut records = 0usize;
        for resource_logs in json.get("resourceLogs").and_then(Json::as_array).into_iter().flatten() {
            let resource = attributes(resource_logs.get("resource"));
            // `arn:aws:lambda:<region>:<account>:function:<name>[:<alias>]` when the name is not given.
            let arn_function = text(&resource, &["aws.lambda.invoked_arn", "cloud.resource_id"])
                .and_then(|arn| arn.split(':').nth(6).map(str::to_string));
            let function = text(&resource, &["faas.name"]).or(arn_function);
            let group = text(&resource, &["aws.log.group.names"])
                .or_else(|| function.as_ref().map(|f| format!("/aws/lambda/{f}")));
            let stream = text(&resource, &["aws.log.stream.names", "faas.instance"]);
            let account = text(&resource, &["cloud.account.id"]);
            let resource_request = text(&resource, &["faas.invocation_id"]);
            let scopes = resource_logs.get("scopeLogs").or_else(|| resource_logs.get("instrumentationLibraryLogs"));
            for record in scopes
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("logRecords")?.as_array())
                .flatten()
            {
                let position = format!("{}#{records}", unit.position);
                records += 1;
                let own = attributes(Some(record));
                let request =
                    text(&own, &["faas.invocation_id", "faas.execution", "aws.request_id", "aws.lambda.request_id"])
                        .or_else(|| resource_request.clone());
                let nanos = |key: &str| trace::nanos(record.get(key)).filter(|micros| *micros > 0);
                let ts = nanos("timeUnixNano").or_else(|| nanos("observedTimeUnixNano"));
                let body = match record.get("body").map(trace::otlp_value) {
                    Some(Json::String(text)) => text,
                    Some(Json::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                if body.is_empty() {
                    self.dead_letter_at(
                        ts,
                        "bad_otlp_log",
                        "an OTLP log record without a body",
                        record.to_string().as_bytes(),
                        unit.source,
                        &position,
                    );
                    continue;
                }
                if let (Some(request), Some(trace_id)) =
                    (&request, record.get("traceId").and_then(Json::as_str).filter(|t| !t.is_empty()))
                {
                    let origin = Origin {
                        function_name: function.as_deref(),
                        source: unit.source,
                        position: &position,
                        ..Origin::default()
                    };
                    self.assembler.link_trace(
                        request,
                        &trace::xray_trace_id(trace_id),
                        &origin,
                        ts.unwrap_or_default(),
                    );
                }
                let context = Context {
                    log_group: group.as_deref(),
                    log_stream: stream.as_deref(),
                    account: account.as_deref(),
                    request_id: request.as_deref(),
                };
                self.log_message(&context, ts, &body, unit, &position, None);
            }
        }
        if records == 0 {
            self.dead_letter("bad_otlp_log", "resourceLogs without log records", raw, unit.source, unit.position);
        }
    }

    fn auto(&mut self, bytes: &[u8], unit: &Unit<'_>, depth: usize) {
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
        let body = &bytes[start..];
        if body.is_empty() {
            return;
        }
        if body.starts_with(b"H4sI") {
            // Base64 of gzip: a subscription payload as Kinesis or Firehose deliver its data.
            if let Some(decoded) = std::str::from_utf8(body).ok().and_then(base64_decode) {
                return self.decode(Format::Auto, &decoded, unit, depth + 1);
            }
        }
        if events::is_insights_csv(body) {
            return self.insights_csv(body, unit);
        }
        if body[0] == b'{' || body[0] == b'[' {
            // A subscription payload is parsed straight into borrowed structs: the hot path.
            // CloudWatch writes `messageType` first; serialisers that sort keys write it last.
            if sniffs_subscription(body) && self.read_subscription(body, unit) {
                return;
            }
            if cloudtrail::sniffs_trail_file(body) && self.read_trail_file(body, unit) {
                return;
            }
            let error = match serde_json::from_slice::<Json>(body) {
                Ok(json) => return self.json(&json, body, unit, depth),
                Err(error) => error,
            };
            // Documents written back to back (`}{`, as Firehose writes records to S3), or one broken one.
            let first_line = body.split(|b| *b == b'\n').next().unwrap_or(body);
            if serde_json::from_slice::<serde::de::IgnoredAny>(first_line).is_err()
                && self.concatenated(body, unit, depth)
            {
                return;
            }
            if !body.contains(&b'\n') {
                return self.json_error(&error, body, unit);
            }
            // Newline-delimited: each line is JSON or a text line. NDJSON of CloudWatch events and of
            // Lambda JSON log lines each have a fast path; the one that took the last line goes first.
            let mut events_first = false;
            for (line_idx, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let position = format!("{}:{}", unit.position, line_idx + 1);
                let line_unit = Unit { position: &position, ..*unit };
                if line.first() == Some(&b'{') && line.len() <= LINE_BYTES_MAX {
                    // A subscription payload per line (how payloads are saved and replayed): straight into
                    // borrowed structs, not through a `Value` and the other shapes' checks.
                    if !events_first && sniffs_subscription(line) && self.read_subscription(line, &line_unit) {
                        continue;
                    }
                    let text = std::str::from_utf8(line).ok();
                    if events_first {
                        if let Some(event) = text.and_then(events::parse_line) {
                            self.event(&event, &line_unit, line_unit.position);
                            continue;
                        }
                    }
                    // Lambda JSON log lines, read without a `Value`.
                    if let Some((text, parsed)) = text.and_then(|t| Some((t, lambda::parse_json_fast(t)?))) {
                        events_first = false;
                        let context = self.context(&line_unit, None);
                        self.log_message(&context, None, text.trim(), &line_unit, line_unit.position, Some(parsed));
                        continue;
                    }
                    if !events_first {
                        if let Some(event) = text.and_then(events::parse_line) {
                            events_first = true;
                            self.event(&event, &line_unit, line_unit.position);
                            continue;
                        }
                    }
                    match serde_json::from_slice::<Json>(line) {
                        Ok(json) => self.json(&json, line, &line_unit, depth),
                        Err(error) => self.json_error(&error, line, &line_unit),
                    }
                } else {
                    self.text_lines(line, &line_unit);
                }
            }
            return;
        }
        self.text_lines(body, unit)
    }

    fn json(&mut self, json: &Json, raw: &[u8], unit: &Unit<'_>, depth: usize) {
        if let Some(event) = events::of_value(json) {
            return self.event(&event, unit, unit.position);
        }
        // Lambda log lines first: they are the bulk of NDJSON input, and the checks for the other
        // formats below cost a dozen key lookups each.
        let is_log_line = json.get("type").and_then(Json::as_str).is_some_and(|t| t.starts_with("platform."))
            || ((json.get("message").is_some() || json.get("msg").is_some())
                && (json.get("timestamp").is_some() || json.get("time").is_some() || json.get("level").is_some()));
        if is_log_line {
            if let Ok(text) = std::str::from_utf8(raw) {
                let context = self.context(unit, None);
                let (ts, message) = lambda::parse_json_value(json, text);
                let parsed = (ts.or_else(|| timestamp::of_record(json)), message);
                return self.log_message(&context, None, text.trim(), unit, unit.position, Some(parsed));
            }
        }
        if let Some(data) = json.get("awslogs").and_then(|a| a.get("data")).and_then(Json::as_str) {
            return match base64_decode(data) {
                Some(decoded) => self.decode(Format::Auto, &decoded, unit, depth + 1),
                None => self.dead_letter("bad_base64", "awslogs.data is not base64", raw, unit.source, unit.position),
            };
        }
        if json.get("messageType").is_some() {
            return match serde_json::from_slice::<Subscription<'_>>(raw) {
                Ok(subscription) => self.serde_subscription(subscription, unit),
                Err(error) => self.dead_letter("bad_subscription", &error.to_string(), raw, unit.source, unit.position),
            };
        }
        // Kinesis (`Records[].kinesis.data`), Firehose (`records[].data`) and Kafka (`records{}[].value`)
        // events carry base64 payloads; each is a unit of its own.
        let mut nested = Vec::new();
        if let Some(Json::Array(records)) = json.get("Records") {
            nested.extend(records.iter().filter_map(|r| r.get("kinesis")?.get("data")?.as_str()));
        }
        match json.get("records") {
            Some(Json::Array(records)) => nested.extend(records.iter().filter_map(|r| r.get("data")?.as_str())),
            Some(Json::Object(partitions)) => nested.extend(
                partitions.values().filter_map(Json::as_array).flatten().filter_map(|r| r.get("value")?.as_str()),
            ),
            _ => {}
        }
        // A Firehose or Kafka envelope with no records is empty, not unrecognised.
        let envelope = json.get("deliveryStreamArn").is_some()
            || json.get("requestId").is_some() && json.get("records").is_some_and(Json::is_array);
        if !nested.is_empty() || envelope {
            for (idx, data) in nested.into_iter().enumerate() {
                let position = format!("{}#{idx}", unit.position);
                let record_unit = Unit { position: &position, ..*unit };
                match base64_decode(data) {
                    Some(decoded) => self.decode(Format::Auto, &decoded, &record_unit, depth + 1),
                    None => self.dead_letter(
                        "bad_base64",
                        "record data is not base64",
                        data.as_bytes(),
                        unit.source,
                        &position,
                    ),
                }
            }
            return;
        }
        if let Some(events) = events::of_document(json) {
            let mut position = String::new();
            for (idx, event) in events.iter().enumerate() {
                position.clear();
                use std::fmt::Write;
                let _ = write!(position, "{}#{idx}", unit.position);
                self.event(event, unit, &position);
            }
            return;
        }
        if cloudtrail::looks_like(json) {
            return self.cloudtrail_json(json, raw, unit);
        }
        if json.get("resourceLogs").is_some() {
            return self.otlp_logs(json, raw, unit);
        }
        if trace::looks_like(json) {
            return self.trace_json(json, raw, unit);
        }
        // A JSON record of an unknown shape that says when it happened is a log line of some program.
        if let (Some(ts), Ok(text)) = (timestamp::of_record(json), std::str::from_utf8(raw)) {
            let context = self.context(unit, None);
            return self.log_message(&context, Some(ts), text.trim(), unit, unit.position, None);
        }
        self.dead_letter_at(
            timestamp::of_record(json),
            "unrecognised_json",
            "JSON that is no log, CloudTrail or trace format",
            raw,
            unit.source,
            unit.position,
        )
    }

    /// One CloudWatch Logs event of any shape but a subscription payload's.
    fn event(&mut self, event: &Event<'_>, unit: &Unit<'_>, position: &str) {
        let fallback = self.unit_stream.take();
        let context = Context {
            log_group: event.log_group.as_deref().or(unit.log_group),
            log_stream: event.log_stream.as_deref().or(fallback.as_deref()),
            account: event.account.as_deref(),
            request_id: None,
        };
        self.log_message(&context, event.ts, &event.message, unit, position, None);
        self.unit_stream = fallback;
    }

    /// A unit forced to `Format::Events`.
    fn events(&mut self, bytes: &[u8], unit: &Unit<'_>) {
        if events::is_insights_csv(bytes) {
            return self.insights_csv(bytes, unit);
        }
        match serde_json::from_slice::<Json>(bytes) {
            Ok(json) => {
                if let Some(event) = events::of_value(&json) {
                    return self.event(&event, unit, unit.position);
                }
                match events::of_document(&json) {
                    Some(_) => self.json(&json, bytes, unit, 0),
                    None => self.dead_letter(
                        "not_an_event",
                        "JSON that holds no log events",
                        bytes,
                        unit.source,
                        unit.position,
                    ),
                }
            }
            Err(error) if !bytes.trim_ascii().contains(&b'\n') => self.json_error(&error, bytes, unit),
            Err(_) => self.each_line(bytes, unit, |this, line, line_unit| {
                match std::str::from_utf8(line).ok().and_then(events::parse_line) {
                    Some(event) => this.event(&event, line_unit, line_unit.position),
                    None => this.dead_letter(
                        "not_an_event",
                        "line that is no log event",
                        line,
                        line_unit.source,
                        line_unit.position,
                    ),
                }
            }),
        }
    }

    /// Each non-blank line of `bytes`, trimmed, read by `read` as a unit of its own (`<position>:<line>`).
    fn each_line(&mut self, bytes: &[u8], unit: &Unit<'_>, mut read: impl FnMut(&mut Self, &[u8], &Unit<'_>)) {
        for (line_idx, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let position = format!("{}:{}", unit.position, line_idx + 1);
            read(self, line, &Unit { position: &position, ..*unit });
        }
    }

    /// Logs Insights results saved as CSV.
    fn insights_csv(&mut self, bytes: &[u8], unit: &Unit<'_>) {
        for (record, event) in events::of_insights_csv(bytes) {
            let position = format!("{}:{record}", unit.position);
            match event {
                Ok(event) => self.event(&event, unit, &position),
                Err(error) => self.dead_letter("bad_csv", &error, &[], unit.source, &position),
            }
        }
    }

    /// JSON documents back to back with nothing or white space between them, each read as a unit of its
    /// own; what follows a broken one is a dead letter. `false`, having read nothing, when the first
    /// document is broken: the bytes are something else.
    fn concatenated(&mut self, body: &[u8], unit: &Unit<'_>, depth: usize) -> bool {
        let mut documents = serde_json::Deserializer::from_slice(body).into_iter::<serde::de::IgnoredAny>();
        let mut start = 0;
        let mut idx = 0usize;
        while let Some(document) = documents.next() {
            let end = documents.byte_offset();
            let position = format!("{}@{idx}", unit.position);
            let document_unit = Unit { position: &position, ..*unit };
            match document {
                Ok(_) => self.auto(&body[start..end], &document_unit, depth + 1),
                Err(_) if idx == 0 => return false,
                Err(error) => {
                    self.json_error(&error, &body[start..], &document_unit);
                    break;
                }
            }
            start = end;
            idx += 1;
        }
        idx > 0
    }

    fn json_error(&mut self, error: &serde_json::Error, raw: &[u8], unit: &Unit<'_>) {
        let reason = match error.classify() {
            serde_json::error::Category::Eof => "truncated_json",
            _ if error.to_string().contains("recursion limit") => "nesting_too_deep",
            _ => "malformed_json",
        };
        self.dead_letter(reason, &error.to_string(), raw, unit.source, unit.position);
    }

    fn context<'u>(&self, unit: &Unit<'u>, stream: Option<&'u str>) -> Context<'u> {
        Context { log_group: unit.log_group, log_stream: stream, ..Context::default() }
    }

    fn subscription_bytes(&mut self, bytes: &[u8], unit: &Unit<'_>) {
        if self.scan_subscription(bytes, unit) {
            return;
        }
        match serde_json::from_slice::<Json>(bytes) {
            Ok(json) if json.get("awslogs").is_some() => self.json(&json, bytes, unit, 0),
            Ok(_) => match serde_json::from_slice::<Subscription<'_>>(bytes) {
                Ok(subscription) => self.serde_subscription(subscription, unit),
                Err(error) => {
                    self.dead_letter("bad_subscription", &error.to_string(), bytes, unit.source, unit.position)
                }
            },
            Err(error) => self.json_error(&error, bytes, unit),
        }
    }

    /// Reads `bytes` as a subscription payload if they are one; whether they were.
    fn read_subscription(&mut self, bytes: &[u8], unit: &Unit<'_>) -> bool {
        if self.scan_subscription(bytes, unit) {
            return true;
        }
        match serde_json::from_slice::<Subscription<'_>>(bytes) {
            Ok(subscription) => {
                self.serde_subscription(subscription, unit);
                true
            }
            Err(_) => false,
        }
    }

    /// A subscription payload through `scan`, which reads those that serde reads to the same values, or
    /// gives up (`false`) and leaves the payload to serde.
    fn scan_subscription(&mut self, bytes: &[u8], unit: &Unit<'_>) -> bool {
        let Ok(body) = std::str::from_utf8(bytes) else { return false };
        let mut scratch = std::mem::take(&mut self.scratch);
        let read =
            scan::subscription(body, &mut scratch).map(|head| self.subscription(head, scratch.events(body), unit));
        scratch.trim();
        self.scratch = scratch;
        read.is_some()
    }

    fn serde_subscription(&mut self, subscription: Subscription<'_>, unit: &Unit<'_>) {
        let head = Head {
            message_type: subscription.message_type,
            owner: subscription.owner,
            log_group: subscription.log_group,
            log_stream: subscription.log_stream,
        };
        self.subscription(head, subscription.log_events.iter().map(|e| (e.timestamp, e.message.as_ref())), unit)
    }

    /// A subscription payload's fields and its events' timestamps (milliseconds) and messages.
    fn subscription<'e>(&mut self, head: Head<'_>, events: impl Iterator<Item = (i64, &'e str)>, unit: &Unit<'_>) {
        match head.message_type {
            "CONTROL_MESSAGE" => {
                self.stats.control_messages += 1;
            }
            "DATA_MESSAGE" => {
                let context = Context {
                    log_group: head.log_group.as_deref().or(unit.log_group),
                    log_stream: head.log_stream.as_deref(),
                    account: head.owner,
                    request_id: None,
                };
                // One position buffer for the whole payload, its `<unit position>#` written once: this is
                // the hot loop.
                let mut position = String::with_capacity(unit.position.len() + 8);
                position.push_str(unit.position);
                position.push('#');
                let prefix = position.len();
                for (idx, (millis, message)) in events.enumerate() {
                    position.truncate(prefix);
                    push_decimal(&mut position, idx);
                    let ts = timestamp::millis_to_micros(millis);
                    self.log_message(&context, ts, message, unit, &position, None);
                }
            }
            other => self.dead_letter(
                "bad_subscription",
                &format!("unknown messageType {other:?}"),
                other.as_bytes(),
                unit.source,
                unit.position,
            ),
        }
    }

    /// A trail file read without a `Json` tree (`cloudtrail::read_trail_file`); `false` when it is not
    /// plainly one, and nothing was pushed.
    fn read_trail_file(&mut self, body: &[u8], unit: &Unit<'_>) -> bool {
        match cloudtrail::read_trail_file(&mut self.cloudtrail, body, unit.source, unit.position) {
            Some(records) => {
                self.stats.cloudtrail_events += records as u64;
                true
            }
            None => false,
        }
    }

    fn cloudtrail_json(&mut self, json: &Json, raw: &[u8], unit: &Unit<'_>) {
        let records = cloudtrail::records(json);
        if records.is_empty() {
            return self.dead_letter("cloudtrail_missing_field", "no records", raw, unit.source, unit.position);
        }
        for (idx, record) in records.into_iter().enumerate() {
            let position = format!("{}#{idx}", unit.position);
            match cloudtrail::push_record(&mut self.cloudtrail, record, unit.source, &position) {
                Ok(()) => self.stats.cloudtrail_events += 1,
                Err(rejected) => {
                    let raw = record.to_string();
                    let ts = timestamp::of_record(record);
                    self.dead_letter_at(ts, rejected.reason, &rejected.detail, raw.as_bytes(), unit.source, &position);
                }
            }
        }
    }

    fn trace_json(&mut self, json: &Json, raw: &[u8], unit: &Unit<'_>) {
        let mut rejected = Vec::new();
        let spans = trace::push_spans(&mut self.spans, json, unit.source, unit.position, &mut rejected);
        self.stats.spans += spans.len() as u64;
        for link in spans {
            if let Some(request_id) = &link.request_id {
                let origin = Origin {
                    function_name: link.function_name.as_deref(),
                    source: unit.source,
                    position: unit.position,
                    ..Origin::default()
                };
                self.assembler.link_trace(request_id, &link.trace_id, &origin, link.start_micros);
            }
        }
        for (reason, detail) in rejected {
            self.dead_letter(reason, &detail, raw, unit.source, unit.position);
        }
    }

    /// Lines of Lambda logs: text or JSON messages, optionally behind an export timestamp, with
    /// continuation lines (stack traces) joined to the message they belong to.
    fn text_lines(&mut self, bytes: &[u8], unit: &Unit<'_>) {
        if self.unit_last_ts.is_none() && self.unit_first_ts.is_none() {
            self.unit_first_ts = first_time_in(bytes);
        }
        let stream_from_key = unit.key.and_then(export_stream_of_key);
        let mut message = String::new();
        let mut message_ts = None;
        let mut message_line = 0usize;
        let mut stream: Option<String> = stream_from_key.clone();
        for (line_idx, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > LINE_BYTES_MAX {
                let position = format!("{}:{}", unit.position, line_idx + 1);
                self.dead_letter(
                    "oversized_line",
                    &format!("line of {} bytes over {LINE_BYTES_MAX}", line.len()),
                    line,
                    unit.source,
                    &position,
                );
                continue;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                let position = format!("{}:{}", unit.position, line_idx + 1);
                self.dead_letter("invalid_utf8", "line is not UTF-8", line, unit.source, &position);
                continue;
            };
            if line.trim().is_empty() {
                continue;
            }
            // In an export object every event starts with its timestamp, so a line without one continues
            // the event before it.
            let continues =
                is_continuation(line) || (stream_from_key.is_some() && timestamp::parse_prefix(line).is_none());
            if !message.is_empty() && continues && message.len() + line.len() < LINE_BYTES_MAX {
                message.push('\n');
                message.push_str(line);
                continue;
            }
            if !message.is_empty() {
                self.flush_text_message(&message, message_ts, stream.as_deref(), unit, message_line);
                message.clear();
            }
            let (ts, rest, line_stream) = split_event_prefix(line);
            message_ts = ts;
            message_line = line_idx + 1;
            if let Some(line_stream) = line_stream {
                stream = Some(line_stream.to_string());
            } else if stream_from_key.is_some() {
                stream = stream_from_key.clone();
            }
            message.push_str(rest);
        }
        if !message.is_empty() {
            self.flush_text_message(&message, message_ts, stream.as_deref(), unit, message_line);
        }
    }

    fn flush_text_message(
        &mut self,
        message: &str,
        ts: Option<i64>,
        stream: Option<&str>,
        unit: &Unit<'_>,
        line: usize,
    ) {
        let context = Context { log_group: unit.log_group, log_stream: stream, ..Context::default() };
        let position = format!("{}:{line}", unit.position);
        self.log_message(&context, ts, message, unit, &position, None);
    }

    /// One log message: a `logs` row, and its part of an invocation. `parsed`: a JSON line the caller
    /// has parsed already.
    fn log_message(
        &mut self,
        context: &Context<'_>,
        event_ts: Option<i64>,
        text: &str,
        unit: &Unit<'_>,
        position: &str,
        parsed: Option<(Option<i64>, Message<'_>)>,
    ) {
        if text.len() > LINE_BYTES_MAX {
            let reason = format!("message of {} bytes over {LINE_BYTES_MAX}", text.len());
            return self.dead_letter_at(event_ts, "oversized_line", &reason, text.as_bytes(), unit.source, position);
        }
        let parsed = parsed.or_else(|| {
            if text.starts_with('{') {
                lambda::parse_json_fast(text).or_else(|| lambda::parse_json(text))
            } else {
                None
            }
        });
        let (json_ts, mut message, json) = match parsed {
            Some((ts, message)) => (ts, message, true),
            None => (None, lambda::parse_text(text), false),
        };
        if let (Message::App { request_id: slot @ None, .. }, Some(id)) = (&mut message, context.request_id) {
            *slot = Some(std::borrow::Cow::Owned(id.to_string()));
        }
        let line_ts = match &message {
            Message::App { ts_micros, .. } => *ts_micros,
            _ => None,
        };
        // The event's own time; else, said in `format`, the time of the line before it in this unit (a
        // START line among bare messages), of the first line after it that has one, or of the ingest.
        let (ts, format) = match event_ts.or(json_ts).or(line_ts) {
            Some(ts) => {
                self.unit_last_ts = Some(ts);
                (ts, if json { "json" } else { "text" })
            }
            None if self.unit_last_ts.or(self.unit_first_ts).is_some() => {
                self.stats.times_inferred += 1;
                let ts = self.unit_last_ts.or(self.unit_first_ts).expect("checked");
                (ts, if json { "json+inferred_time" } else { "text+inferred_time" })
            }
            None => {
                self.stats.times_of_ingest += 1;
                (store::time::now_micros(), if json { "json+ingest_time" } else { "text+ingest_time" })
            }
        };
        self.watermark_micros = self.watermark_micros.max(ts);
        let function_name = context.log_group.and_then(function_of_group);
        let request_id: Option<&str> = message
            .request_id()
            .filter(|id| !id.is_empty())
            .or_else(|| self.assembler.current_request(context.log_stream.unwrap_or(unit.source)));
        LogRow::<Borrowed> {
            ts,
            function_name,
            log_group: context.log_group,
            log_stream: context.log_stream,
            request_id,
            level: message.level(),
            message: text,
            format: Some(format),
            ingest_source: Some(unit.source),
            ingest_position: Some(position),
        }
        .push_to(&mut self.logs);
        self.stats.log_lines += 1;
        let origin = Origin {
            function_name,
            log_group: context.log_group,
            log_stream: context.log_stream,
            account: context.account,
            region: None,
            source: unit.source,
            position,
        };
        self.assembler.observe(&message, ts, &origin, &mut self.invocations);
    }

    /// Keeps a record that could not be decoded, with why, at the time of the ingest.
    pub fn dead_letter(&mut self, reason: &'static str, error: &str, raw: &[u8], source: &str, position: &str) {
        self.dead_letter_at(None, reason, error, raw, source, position)
    }

    /// `dead_letter` at the record's own time when one could be read.
    pub fn dead_letter_at(
        &mut self,
        ts: Option<i64>,
        reason: &'static str,
        error: &str,
        raw: &[u8],
        source: &str,
        position: &str,
    ) {
        *self.stats.dead_letters.entry(reason).or_default() += 1;
        DeadLetterRow::<Borrowed> {
            ts: ts.unwrap_or_else(store::time::now_micros),
            reason,
            error: Some(bounded(error, 1024)),
            raw: Some(&raw[..raw.len().min(DEAD_LETTER_RAW_BYTES_MAX)]),
            raw_bytes: Some(raw.len() as i64),
            ingest_source: Some(source),
            ingest_position: Some(position),
        }
        .push_to(&mut self.dead_letters);
    }
}

/// The log group and stream of a unit when its source was told a template (`{N}` parts of the key,
/// `GROUP:STREAM`) or its key names them (`…/aws/lambda/<function>/…`); `None` to keep the unit's.
fn resolve_context(unit: &Unit<'_>) -> Option<(String, Option<String>)> {
    match unit.log_group {
        Some(template) if template.contains(['{', ':']) => events::resolve_group(template, unit.key),
        Some(_) => None,
        None => match events::context_of_key(unit.key?) {
            (Some(group), stream) => Some((group, stream)),
            _ => None,
        },
    }
}

/// Lines read looking for a unit's first time.
const FIRST_TIME_LINES_MAX: usize = 1_000;

/// The time of the first line among the first `FIRST_TIME_LINES_MAX` that has one: a timestamp before
/// the message (export objects, Lambda's text format) or a time field of a JSON line.
fn first_time_in(bytes: &[u8]) -> Option<i64> {
    bytes.split(|b| *b == b'\n').take(FIRST_TIME_LINES_MAX).find_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim();
        if line.starts_with('{') {
            return timestamp::of_record(&serde_json::from_str::<Json>(line).ok()?);
        }
        timestamp::parse_prefix(line).map(|(ts, _)| ts)
    })
}

/// Appends `n` in decimal, as `write!` would, without the formatting machinery.
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// Whether a JSON document says `"messageType"` near one of its ends, where a subscription payload has
/// it: CloudWatch writes it first, serialisers that sort keys write it after `logStream`.
fn sniffs_subscription(body: &[u8]) -> bool {
    let sniff = |part: &[u8]| memchr::memmem::find(part, b"\"messageType\"").is_some();
    if body.len() <= 8192 {
        return sniff(body);
    }
    sniff(&body[..4096]) || sniff(&body[body.len() - 4096..])
}

/// Whether a line continues the message before it: stack frames, tracebacks, an `XRAY` suffix.
fn is_continuation(line: &str) -> bool {
    line.starts_with([' ', '\t'])
        || line.starts_with("at ")
        || line.starts_with("Caused by:")
        || line.starts_with("Traceback")
        || line.starts_with("XRAY TraceId:")
        || line.starts_with("...")
        || line.starts_with('}')
        || line.starts_with(']')
}

/// Splits the event timestamp (export objects: `<ts> <message>`) and, in `aws logs tail` output, the log
/// stream (`<ts> <stream> <message>`) off a line. A runtime's own `<ts>\t` prefix is left in the message.
fn split_event_prefix(line: &str) -> (Option<i64>, &str, Option<&str>) {
    let Some((ts, len)) = timestamp::parse_prefix(line) else {
        return (None, line, None);
    };
    let Some(rest) = line[len..].strip_prefix(' ') else {
        return (None, line, None);
    };
    // `<ts> <request id> …` is a runtime's own line (Java, timeouts), not an export prefix.
    if lambda::is_request_id(rest.split([' ', '\t']).next().unwrap_or_default()) {
        return (None, line, None);
    }
    // `aws logs tail`: `2024/01/01/[$LATEST]0123abcd` before the message.
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    if first.len() > 12 && first.as_bytes().get(4) == Some(&b'/') && first.contains("/[") {
        return (Some(ts), after, Some(first));
    }
    (Some(ts), rest, None)
}
