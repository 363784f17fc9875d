//! The same CloudWatch Logs events in every shape that AWS and its tools deliver them, for the golden
//! tests and benchmarks of ingest: subscription payloads (one a line, or back to back as Firehose writes
//! them to S3, plain or gzip'd), NDJSON of events with each tool's field names, pages of `aws logs
//! filter-log-events` and `get-log-events`, Logs Insights results as JSON and CSV, and the bare messages
//! of Firehose with message extraction. Input is subscription payloads as `render` makes them.

use std::io::Write;

use serde_json::{json, Value};

use crate::render::iso_millis;

/// A delivery shape of CloudWatch Logs events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Subscription payloads, one a line, a file per function (Kinesis or Lambda consumers that save each
    /// record).
    Subscription,
    /// Subscription payloads back to back without a separator, each gzip'd, as Firehose writes a
    /// subscription stream to S3 unless told otherwise.
    Firehose,
    /// `Firehose` with the payloads not compressed: `}{` between them.
    FirehosePlain,
    /// NDJSON of events, one a line, with these names for the group and stream, and the time in epoch
    /// milliseconds or as RFC 3339.
    Events { names: Names, rfc3339: bool },
    /// `aws logs filter-log-events` output saved per log group, one page a file.
    FilterLogEvents,
    /// `aws logs get-log-events` output saved per log stream as `aws/lambda/<function>/<stream>.json`.
    GetLogEvents,
    /// Logs Insights results downloaded from the console as JSON, newest first.
    InsightsJson,
    /// Logs Insights results downloaded as CSV, newest first.
    InsightsCsv,
    /// Firehose with "decompression and message extraction": bare messages, one a line, in objects
    /// under `messages/<function>/`, with neither group nor stream inside (`--log-group
    /// '/aws/lambda/{-2}'` names it).
    Messages,
}

/// Field names of the log group and stream in NDJSON of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// `logGroup`/`logStream`: subscription field names, Vector, Fluent Bit's CloudWatch input.
    Camel,
    /// `log_group`/`log_stream`: snake-case shippers.
    Snake,
    /// `logGroupName`/`logStreamName`: the API's names.
    Api,
    /// `@log`/`@logStream`: Logs Insights.
    Insights,
}

impl Shape {
    /// Every shape, each name variant and time format of NDJSON events included.
    pub const ALL: [Shape; 16] = [
        Shape::Subscription,
        Shape::Firehose,
        Shape::FirehosePlain,
        Shape::Events { names: Names::Camel, rfc3339: false },
        Shape::Events { names: Names::Camel, rfc3339: true },
        Shape::Events { names: Names::Snake, rfc3339: false },
        Shape::Events { names: Names::Snake, rfc3339: true },
        Shape::Events { names: Names::Api, rfc3339: false },
        Shape::Events { names: Names::Api, rfc3339: true },
        Shape::Events { names: Names::Insights, rfc3339: false },
        Shape::Events { names: Names::Insights, rfc3339: true },
        Shape::FilterLogEvents,
        Shape::GetLogEvents,
        Shape::InsightsJson,
        Shape::InsightsCsv,
        Shape::Messages,
    ];

    /// The name `coldtrail generate --shape` takes.
    pub fn name(self) -> String {
        match self {
            Shape::Subscription => "subscription".into(),
            Shape::Firehose => "firehose".into(),
            Shape::FirehosePlain => "firehose-plain".into(),
            Shape::Events { names, rfc3339 } => {
                let names = match names {
                    Names::Camel => "camel",
                    Names::Snake => "snake",
                    Names::Api => "api",
                    Names::Insights => "insights",
                };
                format!("events-{names}{}", if rfc3339 { "-rfc3339" } else { "" })
            }
            Shape::FilterLogEvents => "filter-log-events".into(),
            Shape::GetLogEvents => "get-log-events".into(),
            Shape::InsightsJson => "insights-json".into(),
            Shape::InsightsCsv => "insights-csv".into(),
            Shape::Messages => "messages".into(),
        }
    }
}

impl std::str::FromStr for Shape {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Shape::ALL.into_iter().find(|shape| shape.name() == text).ok_or_else(|| {
            let names: Vec<String> = Shape::ALL.iter().map(|s| s.name()).collect();
            format!("unknown shape {text:?}: {}", names.join(", "))
        })
    }
}

/// One event of a payload with its context.
struct Flat<'a> {
    account: &'a str,
    group: &'a str,
    function: &'a str,
    stream: &'a str,
    id: &'a str,
    ms: i64,
    message: &'a str,
}

fn flatten(payloads: &[Value]) -> Vec<Flat<'_>> {
    let mut out = Vec::new();
    for payload in payloads {
        let group = payload["logGroup"].as_str().unwrap_or_default();
        for event in payload["logEvents"].as_array().into_iter().flatten() {
            out.push(Flat {
                account: payload["owner"].as_str().unwrap_or_default(),
                group,
                function: group.strip_prefix("/aws/lambda/").unwrap_or(group),
                stream: payload["logStream"].as_str().unwrap_or_default(),
                id: event["id"].as_str().unwrap_or_default(),
                ms: event["timestamp"].as_i64().unwrap_or_default(),
                message: event["message"].as_str().unwrap_or_default(),
            });
        }
    }
    out
}

/// `2024-03-05 10:00:00.123`, as Logs Insights prints `@timestamp`.
fn insights_time(ms: i64) -> String {
    iso_millis(ms * 1_000).replace('T', " ").trim_end_matches('Z').to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn csv_cell(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Events per page of `filter-log-events` (the API returns up to 10,000).
const PAGE_EVENTS: usize = 1_000;

/// The subscription payloads in `shape`: files as (path relative to the output directory, bytes). `tag`
/// tells apart the files of successive calls (an hour, a batch).
pub fn render(shape: Shape, payloads: &[Value], tag: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let line = |value: &Value, out: &mut Vec<u8>| {
        serde_json::to_writer(&mut *out, value).expect("writing to memory");
        out.push(b'\n');
    };
    match shape {
        Shape::Subscription => {
            let mut by_function: std::collections::BTreeMap<&str, Vec<u8>> = Default::default();
            for payload in payloads {
                let group = payload["logGroup"].as_str().unwrap_or_default();
                line(payload, by_function.entry(group.strip_prefix("/aws/lambda/").unwrap_or(group)).or_default());
            }
            for (function, out) in by_function {
                files.push((format!("logs/{function}/{tag}.ndjson"), out));
            }
        }
        Shape::Firehose | Shape::FirehosePlain => {
            let mut out = Vec::new();
            for payload in payloads {
                let bytes = serde_json::to_vec(payload).expect("JSON");
                out.extend(if shape == Shape::Firehose { gzip(&bytes) } else { bytes });
            }
            files.push((format!("firehose/{tag}"), out));
        }
        Shape::Events { names, rfc3339 } => {
            let (group_key, stream_key) = match names {
                Names::Camel => ("logGroup", "logStream"),
                Names::Snake => ("log_group", "log_stream"),
                Names::Api => ("logGroupName", "logStreamName"),
                Names::Insights => ("@log", "@logStream"),
            };
            let mut out = Vec::new();
            for event in flatten(payloads) {
                let time = if rfc3339 { json!(iso_millis(event.ms * 1_000)) } else { json!(event.ms) };
                let group = if names == Names::Insights {
                    format!("{}:{}", event.account, event.group)
                } else {
                    event.group.into()
                };
                let mut object = serde_json::Map::new();
                object.insert("id".into(), json!(event.id));
                object.insert("timestamp".into(), time);
                object.insert("message".into(), json!(event.message));
                object.insert(group_key.into(), json!(group));
                object.insert(stream_key.into(), json!(event.stream));
                line(&Value::Object(object), &mut out);
            }
            files.push((format!("{}/{tag}.ndjson", shape.name()), out));
        }
        Shape::FilterLogEvents => {
            let mut by_function: std::collections::BTreeMap<&str, Vec<Flat<'_>>> = Default::default();
            for event in flatten(payloads) {
                by_function.entry(event.function).or_default().push(event);
            }
            for (function, mut events) in by_function {
                // The API returns a group's events in time order across its streams.
                events.sort_by_key(|e| e.ms);
                let pages = events.chunks(PAGE_EVENTS).count();
                for (page, chunk) in events.chunks(PAGE_EVENTS).enumerate() {
                    let events: Vec<Value> = chunk
                        .iter()
                        .map(|e| {
                            json!({"logStreamName": e.stream, "timestamp": e.ms, "message": e.message,
                                   "ingestionTime": e.ms + 180, "eventId": e.id})
                        })
                        .collect();
                    let mut body = json!({"events": events, "searchedLogStreams": []});
                    if page + 1 < pages {
                        body["nextToken"] = json!(format!("token-{tag}-{page}"));
                    }
                    let text = serde_json::to_vec_pretty(&body).expect("JSON");
                    files.push((format!("filter-log-events/aws/lambda/{function}/{tag}-{page:04}.json"), text));
                }
            }
        }
        Shape::GetLogEvents => {
            let mut by_stream: std::collections::BTreeMap<(&str, &str), Vec<Flat<'_>>> = Default::default();
            for event in flatten(payloads) {
                by_stream.entry((event.function, event.stream)).or_default().push(event);
            }
            for ((function, stream), events) in by_stream {
                let events: Vec<Value> = events
                    .iter()
                    .map(|e| json!({"timestamp": e.ms, "message": e.message, "ingestionTime": e.ms + 180}))
                    .collect();
                let body = json!({"events": events, "nextForwardToken": format!("f/{tag}"), "nextBackwardToken": format!("b/{tag}")});
                let text = serde_json::to_vec_pretty(&body).expect("JSON");
                files.push((format!("get-log-events/{tag}/aws/lambda/{function}/{stream}.json"), text));
            }
        }
        Shape::InsightsJson | Shape::InsightsCsv => {
            let mut events = flatten(payloads);
            events.sort_by_key(|e| std::cmp::Reverse(e.ms));
            if shape == Shape::InsightsJson {
                let rows: Vec<Value> = events
                    .iter()
                    .map(|e| {
                        json!({"@timestamp": insights_time(e.ms), "@message": e.message, "@logStream": e.stream,
                               "@log": format!("{}:{}", e.account, e.group)})
                    })
                    .collect();
                files.push((format!("insights/{tag}.json"), serde_json::to_vec_pretty(&rows).expect("JSON")));
            } else {
                let mut out = String::from("@timestamp,@message,@logStream,@log\n");
                for e in &events {
                    let log = format!("{}:{}", e.account, e.group);
                    out.push_str(&format!(
                        "{},{},{},{}\n",
                        insights_time(e.ms),
                        csv_cell(e.message),
                        csv_cell(e.stream),
                        csv_cell(&log)
                    ));
                }
                files.push((format!("insights/{tag}.csv"), out.into_bytes()));
            }
        }
        Shape::Messages => {
            let mut by_function: std::collections::BTreeMap<&str, Vec<u8>> = Default::default();
            for event in flatten(payloads) {
                let out = by_function.entry(event.function).or_default();
                out.extend_from_slice(event.message.as_bytes());
                out.push(b'\n');
            }
            for (function, out) in by_function {
                files.push((format!("messages/{function}/{tag}.log"), out));
            }
        }
    }
    files
}

/// Writes a whole file, gzip'd if asked, complete when it appears under its name (written aside, synced,
/// then renamed), making its directory.
pub fn write_file(path: &std::path::Path, bytes: &[u8], gzip_it: bool) -> std::io::Result<()> {
    let named = |error: std::io::Error| std::io::Error::new(error.kind(), format!("{}: {error}", path.display()));
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(named)?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, if gzip_it { gzip(bytes) } else { bytes.to_vec() }).map_err(named)?;
    std::fs::File::open(&partial).and_then(|file| file.sync_all()).map_err(named)?;
    std::fs::rename(&partial, path).map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_has_a_name_that_parses_back() {
        for shape in Shape::ALL {
            assert_eq!(shape.name().parse::<Shape>(), Ok(shape));
        }
        assert!("nope".parse::<Shape>().is_err());
        assert_eq!(insights_time(1_700_000_000_123), "2023-11-14 22:13:20.123");
    }
}
