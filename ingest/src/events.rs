//! CloudWatch Logs events in the shapes that tools write them, beside the subscription payloads of
//! `cloudwatch`:
//! - NDJSON of events, one a line, with the field names each tool uses (`logGroup`/`logStream`,
//!   `log_group`/`log_stream`, `logGroupName`/`logStreamName`, Logs Insights' `@log`/`@logStream`), the
//!   time in milliseconds or as text;
//! - the pages that `aws logs filter-log-events` and `get-log-events` print (`{"events": [...]}`);
//! - Logs Insights results: the console's JSON export (an array of rows), the CLI's
//!   `get-query-results` (`{"results": [[{"field", "value"}]]}`) and CSV;
//! - the log group and stream that a file's path or an object's key names when the data does not.

use std::borrow::Cow;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

use crate::timestamp;

/// One log event with whatever context it carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event<'a> {
    pub message: Cow<'a, str>,
    /// The event's time, microseconds since the epoch.
    pub ts: Option<i64>,
    pub log_group: Option<Cow<'a, str>>,
    pub log_stream: Option<Cow<'a, str>>,
    /// The account (`owner` of a subscription payload, the prefix of Logs Insights' `@log`).
    pub account: Option<Cow<'a, str>>,
}

/// A JSON value as an event field needs it: text, a number, or anything else (skipped unbuilt).
enum Cell<'a> {
    Text(Cow<'a, str>),
    Number(f64),
    Other,
}

impl<'a> Cell<'a> {
    fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Cell::Text(text) => Some(text),
            _ => None,
        }
    }

    fn time(&self) -> Option<i64> {
        match self {
            Cell::Text(text) => timestamp::of_text(text),
            Cell::Number(number) => timestamp::epoch_to_micros(*number),
            Cell::Other => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Cell<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CellVisitor;
        impl<'de> Visitor<'de> for CellVisitor {
            type Value = Cell<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cell::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cell::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cell::Text(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Cell::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Cell::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Cell::Number(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Cell::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Cell::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Cell::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Cell::Other)
            }
        }
        deserializer.deserialize_any(CellVisitor)
    }
}

/// The fields of a JSON object that say whether it is a log event, read in one pass.
#[derive(Default)]
struct Fields<'a> {
    message: Option<Cell<'a>>,
    at_message: bool,
    time: Option<Cell<'a>>,
    log_group: Option<Cow<'a, str>>,
    log_stream: Option<Cow<'a, str>>,
    owner: Option<Cow<'a, str>>,
    /// `eventId`, `ingestionTime` or `@ptr`: keys only CloudWatch's own output has.
    cloudwatch_key: bool,
    id: bool,
    /// `level`, `type`, `msg`, `record`: keys of a Lambda log line itself.
    log_line_key: bool,
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "message" => fields.message = Some(map.next_value::<Cell<'de>>()?),
                        "@message" => {
                            fields.message = Some(map.next_value::<Cell<'de>>()?);
                            fields.at_message = true;
                        }
                        "timestamp" | "@timestamp" => fields.time = Some(map.next_value::<Cell<'de>>()?),
                        "logGroup" | "log_group" | "logGroupName" | "@log" => {
                            fields.log_group = map.next_value::<Cell<'de>>()?.text()
                        }
                        "logStream" | "log_stream" | "logStreamName" | "@logStream" => {
                            fields.log_stream = map.next_value::<Cell<'de>>()?.text()
                        }
                        "owner" => fields.owner = map.next_value::<Cell<'de>>()?.text(),
                        "eventId" | "ingestionTime" | "@ptr" => {
                            fields.cloudwatch_key = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        "id" => {
                            fields.id = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        "level" | "type" | "msg" | "record" => {
                            fields.log_line_key = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

impl<'a> Fields<'a> {
    /// The event these fields make, when they are one: a text message with a log group or stream, a
    /// key only CloudWatch writes, or a time in epoch milliseconds beside an id (a subscription's
    /// `logEvents` entry on its own). A Lambda log line (`{"timestamp", "level", "message"}`) is not.
    fn event(self) -> Option<Event<'a>> {
        let message = self.message?.text()?;
        let numeric_time = matches!(self.time, Some(Cell::Number(_)));
        let context = self.log_group.is_some() || self.log_stream.is_some();
        let is_event =
            context || self.at_message || self.cloudwatch_key || (numeric_time && (self.id || !self.log_line_key));
        if !is_event {
            return None;
        }
        let ts = self.time.as_ref().and_then(Cell::time);
        let (account, log_group) = match self.log_group {
            Some(group) => split_account(group),
            None => (None, None),
        };
        Some(Event { message, ts, log_group, log_stream: self.log_stream, account: account.or(self.owner) })
    }
}

/// Logs Insights' `@log` is `<account>:<log group>`; log group names hold no `:`.
fn split_account(group: Cow<'_, str>) -> (Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    match group {
        Cow::Borrowed(text) => match text.split_once(':') {
            Some((account, group)) => (Some(Cow::Borrowed(account)), Some(Cow::Borrowed(group))),
            None => (None, Some(Cow::Borrowed(text))),
        },
        Cow::Owned(text) => match text.split_once(':') {
            Some((account, group)) => (Some(Cow::Owned(account.to_string())), Some(Cow::Owned(group.to_string()))),
            None => (None, Some(Cow::Owned(text))),
        },
    }
}

/// One NDJSON line as a log event, without building a `Value`; `None` when the line is no event.
pub fn parse_line(line: &str) -> Option<Event<'_>> {
    serde_json::from_str::<Fields<'_>>(line).ok()?.event()
}

/// A parsed JSON object as a log event.
pub fn of_value(json: &Json) -> Option<Event<'_>> {
    if !json.is_object() {
        return None;
    }
    Fields::deserialize(json).ok()?.event()
}

/// The events of a JSON document that holds a list of them: a page of `filter-log-events` or
/// `get-log-events`, Logs Insights' `get-query-results`, or an array of events or Insights rows.
/// `None` when the document is none of these.
pub fn of_document(json: &Json) -> Option<Vec<Event<'_>>> {
    match json {
        Json::Object(object) => {
            if let Some(Json::Array(events)) = object.get("events") {
                let paged = ["nextToken", "nextForwardToken", "nextBackwardToken", "searchedLogStreams"]
                    .iter()
                    .any(|key| object.contains_key(*key));
                let events: Vec<Event<'_>> = events.iter().filter_map(of_value).collect();
                return (paged || !events.is_empty()).then_some(events);
            }
            if let Some(Json::Array(rows)) = object.get("results") {
                if object.contains_key("status") || object.contains_key("statistics") {
                    return Some(rows.iter().filter_map(insights_row).collect());
                }
            }
            None
        }
        Json::Array(items) if !items.is_empty() => {
            let events: Vec<Event<'_>> = items.iter().filter_map(of_value).collect();
            (events.len() == items.len()).then_some(events)
        }
        _ => None,
    }
}

/// A row of `get-query-results`: `[{"field": "@timestamp", "value": "..."}, ...]`.
fn insights_row(row: &Json) -> Option<Event<'_>> {
    let mut fields = Fields::default();
    for cell in row.as_array()? {
        let Some(Json::String(value)) = cell.get("value") else {
            continue;
        };
        let value = Cow::Borrowed(value.as_str());
        match cell.get("field").and_then(Json::as_str)? {
            "@message" => {
                fields.message = Some(Cell::Text(value));
                fields.at_message = true;
            }
            "@timestamp" => fields.time = Some(Cell::Text(value)),
            "@log" => fields.log_group = Some(value),
            "@logStream" => fields.log_stream = Some(value),
            _ => {}
        }
    }
    fields.event()
}

/// Whether bytes look like Logs Insights results saved as CSV: a header naming `@message`.
pub fn is_insights_csv(bytes: &[u8]) -> bool {
    // A header is short: look no further than its first 4 KiB (a unit may be one long line).
    let head = &bytes[..bytes.len().min(4096)];
    let header = head.split(|b| *b == b'\n').next().unwrap_or_default();
    header.windows(8).any(|w| w == b"@message") && header.contains(&b',') && !header.starts_with(b"{")
}

/// The rows of Logs Insights CSV as events, each with its 1-based record number, or the error of a
/// record that cannot be read.
pub fn of_insights_csv(bytes: &[u8]) -> Vec<(usize, Result<Event<'static>, String>)> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(error) => return vec![(1, Err(format!("unreadable CSV header: {error}")))],
    };
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (message, time, group, stream) =
        (column("@message"), column("@timestamp"), column("@log"), column("@logStream"));
    let mut out = Vec::new();
    for (idx, record) in reader.records().enumerate() {
        let number = idx + 2;
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                out.push((number, Err(format!("unreadable CSV record: {error}"))));
                continue;
            }
        };
        let cell = |col: Option<usize>| col.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
        let Some(text) = cell(message) else {
            out.push((number, Err("CSV record without @message".to_string())));
            continue;
        };
        let (account, log_group) = match cell(group) {
            Some(group) => split_account(Cow::Owned(group.to_string())),
            None => (None, None),
        };
        out.push((
            number,
            Ok(Event {
                message: Cow::Owned(text.to_string()),
                ts: cell(time).and_then(timestamp::of_text),
                log_group,
                log_stream: cell(stream).map(|s| Cow::Owned(s.to_string())),
                account,
            }),
        ));
    }
    out
}

/// The log group and stream that a path or key names: `…/aws/lambda/<function>/<stream>.json`, as
/// saving `get-log-events` per stream lays them out. The stream is what follows the function, without
/// the file's extensions; log stream names hold slashes (`2024/01/01/[$LATEST]0123…`).
pub fn context_of_key(key: &str) -> (Option<String>, Option<String>) {
    let Some(at) = key.find("aws/lambda/") else {
        return (None, None);
    };
    let rest = &key[at + "aws/lambda/".len()..];
    let (function, stream) = rest.split_once('/').unwrap_or((rest, ""));
    if function.is_empty() {
        return (None, None);
    }
    let mut stream = stream;
    for extension in [".gz", ".json", ".ndjson", ".jsonl", ".csv", ".log", ".txt"] {
        stream = stream.strip_suffix(extension).unwrap_or(stream);
    }
    let function = if stream.is_empty() { strip_extensions(function) } else { function };
    (Some(format!("/aws/lambda/{function}")), (!stream.is_empty()).then(|| stream.to_string()))
}

fn strip_extensions(mut name: &str) -> &str {
    for extension in [".gz", ".json", ".ndjson", ".jsonl", ".csv", ".log", ".txt"] {
        name = name.strip_suffix(extension).unwrap_or(name);
    }
    name
}

/// The log group (and stream) a source was told, with `{N}` placeholders filled from the N-th
/// `/`-separated part of the key (1-based; `{-1}` is the file name, `{-2}` its directory):
/// `--log-group '/aws/lambda/{2}'` names the group of `firehose/orders-api/2024/...` objects. A group and a stream are given as `GROUP:STREAM` (log group
/// names hold no `:`). `None` when a placeholder is beyond the key.
pub fn resolve_group(template: &str, key: Option<&str>) -> Option<(String, Option<String>)> {
    let mut resolved = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        resolved.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let index: i64 = rest[open + 1..close].trim().parse().ok()?;
        let parts: Vec<&str> = key?.split('/').filter(|p| !p.is_empty()).collect();
        let at = if index < 0 { parts.len() as i64 + index } else { index - 1 };
        let part = parts.get(usize::try_from(at).ok()?)?;
        resolved.push_str(part);
        rest = &rest[close + 1..];
    }
    resolved.push_str(rest);
    Some(match resolved.split_once(':') {
        Some((group, stream)) => (group.to_string(), Some(stream.to_string()).filter(|s| !s.is_empty())),
        None => (resolved, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "START RequestId: 8f507cfc-1a2b-4697-b07a-ac58fc914c95 Version: $LATEST";

    #[test]
    fn every_tools_field_names_make_the_same_event() {
        let expected = Event {
            message: Cow::Borrowed(START),
            ts: Some(1_700_000_000_123_000),
            log_group: Some(Cow::Borrowed("/aws/lambda/orders")),
            log_stream: Some(Cow::Borrowed("2023/11/14/[$LATEST]abc")),
            account: None,
        };
        for (group, stream) in
            [("logGroup", "logStream"), ("log_group", "log_stream"), ("logGroupName", "logStreamName")]
        {
            for time in ["1700000000123", "\"2023-11-14T22:13:20.123Z\""] {
                let line = format!(
                    r#"{{"id":"3800","timestamp":{time},"message":"{START}","{group}":"/aws/lambda/orders","{stream}":"2023/11/14/[$LATEST]abc"}}"#
                );
                assert_eq!(parse_line(&line), Some(expected.clone()), "{line}");
                let json: Json = serde_json::from_str(&line).unwrap();
                assert_eq!(of_value(&json), Some(expected.clone()), "{line}");
            }
        }
        let insights = format!(
            r#"{{"@timestamp":"2023-11-14 22:13:20.123","@message":"{START}","@logStream":"2023/11/14/[$LATEST]abc","@log":"123456789012:/aws/lambda/orders"}}"#
        );
        let event = parse_line(&insights).unwrap();
        assert_eq!(event.account.as_deref(), Some("123456789012"));
        assert_eq!(Event { account: None, ..event }, expected);
    }

    #[test]
    fn lambda_log_lines_and_other_objects_are_no_events() {
        for line in [
            r#"{"timestamp":"2024-03-05T10:00:00.310Z","level":"INFO","message":"m","requestId":"x"}"#,
            r#"{"time":"2024-03-05T10:00:00Z","type":"platform.start","record":{}}"#,
            r#"{"timestamp":1700000000123,"level":"INFO","message":"pino-like"}"#,
            r#"{"logGroup":"/aws/lambda/x","message":{"not":"text"}}"#,
            r#"{"hello":"world"}"#,
            r#"[1,2]"#,
        ] {
            assert_eq!(parse_line(line), None, "{line}");
        }
        // The minimal `logEvents` entry is one.
        assert!(parse_line(r#"{"id":"1","timestamp":1700000000123,"message":"x"}"#).is_some());
    }

    #[test]
    fn pages_of_the_cli_and_insights_results_are_lists_of_events() {
        let filter: Json = serde_json::from_str(&format!(
            r#"{{"events":[{{"logStreamName":"s1","timestamp":1700000000123,"message":"{START}","ingestionTime":1700000000200,"eventId":"1"}}],"searchedLogStreams":[],"nextToken":"abc"}}"#
        ))
        .unwrap();
        let events = of_document(&filter).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].log_stream.as_deref(), Some("s1"));
        let get: Json =
            serde_json::from_str(r#"{"events":[],"nextForwardToken":"f/1","nextBackwardToken":"b/1"}"#).unwrap();
        assert_eq!(of_document(&get).map(|e| e.len()), Some(0));
        let results: Json = serde_json::from_str(&format!(
            r#"{{"results":[[{{"field":"@timestamp","value":"2023-11-14 22:13:20.123"}},{{"field":"@message","value":"{START}"}},{{"field":"@log","value":"1:/aws/lambda/orders"}},{{"field":"@ptr","value":"x"}}]],"statistics":{{}},"status":"Complete"}}"#
        ))
        .unwrap();
        let events = of_document(&results).unwrap();
        assert_eq!(events[0].ts, Some(1_700_000_000_123_000));
        assert_eq!(events[0].log_group.as_deref(), Some("/aws/lambda/orders"));
        assert_eq!(of_document(&serde_json::json!({"Records": []})), None);
        assert_eq!(of_document(&serde_json::json!([{"eventVersion": "1.08"}])), None);
    }

    #[test]
    fn insights_csv_rows_keep_quoted_multi_line_messages() {
        let csv = "@timestamp,@message,@logStream,@log\n\
                   2023-11-14 22:13:20.123,\"REPORT RequestId: x\tDuration: 1 ms\nXRAY TraceId: 1-a-b\",s1,1:/aws/lambda/o\n\
                   2023-11-14 22:13:20.124,\"with \"\"quotes\"\", commas\",s1,1:/aws/lambda/o\n\
                   2023-11-14 22:13:20.125,,s1,1:/aws/lambda/o\n";
        assert!(is_insights_csv(csv.as_bytes()));
        let rows = of_insights_csv(csv.as_bytes());
        assert_eq!(rows.len(), 3);
        let first = rows[0].1.as_ref().unwrap();
        assert!(first.message.ends_with("XRAY TraceId: 1-a-b"));
        assert_eq!(first.log_group.as_deref(), Some("/aws/lambda/o"));
        assert_eq!(rows[1].1.as_ref().unwrap().message, "with \"quotes\", commas");
        assert!(rows[2].1.is_err());
        assert!(!is_insights_csv(b"{\"@message\": 1}"));
    }

    #[test]
    fn paths_and_templates_name_the_group_and_stream() {
        assert_eq!(
            context_of_key("saved/aws/lambda/orders/2023/11/14/[$LATEST]abc.json"),
            (Some("/aws/lambda/orders".into()), Some("2023/11/14/[$LATEST]abc".into()))
        );
        assert_eq!(context_of_key("aws/lambda/orders.ndjson.gz"), (Some("/aws/lambda/orders".into()), None));
        assert_eq!(context_of_key("logs/other.json"), (None, None));
        assert_eq!(
            resolve_group("/aws/lambda/{2}", Some("firehose/orders/2024/01/01/x.gz")),
            Some(("/aws/lambda/orders".into(), None))
        );
        assert_eq!(resolve_group("/aws/lambda/{9}", Some("a/b")), None);
        assert_eq!(
            resolve_group("/aws/lambda/{-2}", Some("/d/orders/h.log")),
            Some(("/aws/lambda/orders".into(), None))
        );
        assert_eq!(resolve_group("/aws/lambda/{-5}", Some("a/b")), None);
        assert_eq!(resolve_group("/aws/lambda/o:s/1", None), Some(("/aws/lambda/o".into(), Some("s/1".into()))));
    }
}
