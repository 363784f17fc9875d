//! Lambda's log messages, text and JSON formats: platform lines (`START`, `END`, `REPORT`, `INIT_START`,
//! `platform.*` events, timeouts, runtime exits) and application lines of the Node.js, Python, Java,
//! .NET and Go runtimes.

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::timestamp;

/// The metrics and outcome of one invocation, from `REPORT` or `platform.report`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report<'a> {
    pub request_id: Cow<'a, str>,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<i64>,
    pub memory_size_mb: Option<i64>,
    pub max_memory_used_mb: Option<i64>,
    pub init_duration_ms: Option<f64>,
    pub restore_duration_ms: Option<f64>,
    pub status: Option<Cow<'a, str>>,
    pub error_type: Option<Cow<'a, str>>,
    pub trace_id: Option<Cow<'a, str>>,
}

impl Report<'_> {
    /// A copy that owns its text.
    pub fn to_static(&self) -> Report<'static> {
        let own = |c: &Option<Cow<'_, str>>| c.as_deref().map(|s| Cow::Owned(s.to_string()));
        Report {
            request_id: Cow::Owned(self.request_id.to_string()),
            duration_ms: self.duration_ms,
            billed_duration_ms: self.billed_duration_ms,
            memory_size_mb: self.memory_size_mb,
            max_memory_used_mb: self.max_memory_used_mb,
            init_duration_ms: self.init_duration_ms,
            restore_duration_ms: self.restore_duration_ms,
            status: own(&self.status),
            error_type: own(&self.error_type),
            trace_id: own(&self.trace_id),
        }
    }
}

/// One Lambda log message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    Start {
        request_id: Cow<'a, str>,
        version: Option<Cow<'a, str>>,
        trace_id: Option<Cow<'a, str>>,
    },
    End {
        request_id: Cow<'a, str>,
    },
    Report(Report<'a>),
    /// `INIT_START` / `platform.initStart`: a new execution environment; the next invocation is a cold start.
    InitStart {
        runtime_version: Option<Cow<'a, str>>,
        function_version: Option<Cow<'a, str>>,
    },
    /// `INIT_REPORT` / `platform.initReport`: the outcome of an init phase that failed or timed out.
    InitReport {
        duration_ms: Option<f64>,
        status: Option<Cow<'a, str>>,
        error_type: Option<Cow<'a, str>>,
    },
    /// `platform.runtimeDone`: the handler's outcome before the report.
    RuntimeDone {
        request_id: Cow<'a, str>,
        status: Option<Cow<'a, str>>,
        error_type: Option<Cow<'a, str>>,
    },
    Timeout {
        request_id: Option<Cow<'a, str>>,
        seconds: Option<f64>,
    },
    /// `Runtime exited with error …`: the runtime process died (crash, out of memory).
    RuntimeExit {
        request_id: Option<Cow<'a, str>>,
        error: Cow<'a, str>,
        error_type: Cow<'a, str>,
    },
    /// Extension, telemetry and logs-dropped notices: kept as log lines only.
    PlatformNotice {
        kind: &'static str,
    },
    /// An application line.
    App {
        ts_micros: Option<i64>,
        request_id: Option<Cow<'a, str>>,
        level: Option<Cow<'a, str>>,
        message: Cow<'a, str>,
    },
}

impl Message<'_> {
    /// The request id the message names, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Message::Start { request_id, .. }
            | Message::End { request_id }
            | Message::RuntimeDone { request_id, .. }
            | Message::Report(Report { request_id, .. }) => Some(request_id),
            Message::Timeout { request_id, .. }
            | Message::RuntimeExit { request_id, .. }
            | Message::App { request_id, .. } => request_id.as_deref(),
            Message::InitStart { .. } | Message::InitReport { .. } | Message::PlatformNotice { .. } => None,
        }
    }

    /// The level to store for the log line.
    pub fn level(&self) -> Option<&str> {
        match self {
            Message::App { level, .. } => level.as_deref(),
            Message::Timeout { .. } | Message::RuntimeExit { .. } => Some("ERROR"),
            Message::InitReport { status: Some(status), .. } if status != "success" => Some("ERROR"),
            Message::Report(Report { status: Some(status), .. }) if status != "success" => Some("ERROR"),
            _ => Some("PLATFORM"),
        }
    }
}

/// Whether `text` looks like a Lambda request id: 8-4-4-4-12 alphanumerics (real ids are UUIDs; AWS's
/// documentation examples contain letters such as `xmpl`).
pub fn is_request_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *b == b'-'
            } else {
                b.is_ascii_alphanumeric()
            }
        })
}

const LEVELS: [&str; 9] = ["TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL", "NOTICE"];

/// Normalises a level name across runtimes (`info`, `Information`, `fail`, `WARNING`, ...).
pub fn normalise_level(level: &str) -> Option<&'static str> {
    const NAMES: [(&str, &str); 15] = [
        ("INFO", "INFO"),
        ("ERROR", "ERROR"),
        ("WARN", "WARN"),
        ("DEBUG", "DEBUG"),
        ("WARNING", "WARN"),
        ("TRACE", "TRACE"),
        ("FATAL", "FATAL"),
        ("INFORMATION", "INFO"),
        ("FAIL", "ERROR"),
        ("ERR", "ERROR"),
        ("CRITICAL", "FATAL"),
        ("CRIT", "FATAL"),
        ("NOTICE", "INFO"),
        ("TRCE", "TRACE"),
        ("DBUG", "DEBUG"),
    ];
    let level = level.trim();
    if level.len() > 11 {
        return None;
    }
    NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(level)).map(|(_, normal)| *normal)
}

/// Splits `text` at the first tab or space run; returns the token and the rest (without the separator).
/// Byte searches, not `char` patterns: this runs several times on every application line.
fn token(text: &str) -> (&str, &str) {
    match memchr::memchr2(b'\t', b' ', text.as_bytes()) {
        Some(at) => (&text[..at], after_separator(&text[at..])),
        None => (text, ""),
    }
}

/// `Key: value` fields separated by tabs or newlines, as in `REPORT` lines.
fn fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(['\t', '\n']).filter_map(|part| {
        // The first `: `, found by its colon.
        let at = memchr::memchr_iter(b':', part.as_bytes()).find(|at| part.as_bytes().get(at + 1) == Some(&b' '))?;
        Some((part[..at].trim(), part[at + 2..].trim()))
    })
}

fn number_before_unit(value: &str) -> Option<f64> {
    // `52.41 ms`: digits and a dot up to a space or the end are the first word that `split_whitespace`
    // would give, found without its Unicode tables.
    let plain = value.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    if matches!(value.as_bytes().get(plain), None | Some(b' ')) {
        if let Some(number) = plain_decimal(&value[..plain]) {
            return Some(number);
        }
    }
    value.split_whitespace().next()?.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `digits[.digits]` of at most 15 digits, as `str::parse` reads it, without its general algorithm: the
/// digits are an integer below 2^53 and the divisor a power of ten below 2^53, both exact in an `f64`,
/// so the one division rounds to the nearest `f64` as `parse` does. `None` for any other text.
fn plain_decimal(text: &str) -> Option<f64> {
    const POWERS: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let (whole, fraction) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    if whole.is_empty() || whole.len() + fraction.len() > 15 {
        return None;
    }
    let mut digits = 0u64;
    for byte in whole.bytes().chain(fraction.bytes()) {
        if !byte.is_ascii_digit() {
            return None;
        }
        digits = digits * 10 + u64::from(byte - b'0');
    }
    Some(digits as f64 / POWERS[fraction.len()])
}

/// Parses a message in Lambda's text format. Never fails: anything unrecognised is an application line.
pub fn parse_text(message: &str) -> Message<'_> {
    let trimmed = message.trim_end_matches(['\n', '\r']);
    if let Some(rest) = trimmed.strip_prefix("START RequestId: ") {
        let (request_id, rest) = token(rest);
        let version = rest.strip_prefix("Version: ").map(|v| Cow::Borrowed(token(v).0));
        return Message::Start { request_id: Cow::Borrowed(request_id), version, trace_id: None };
    }
    if let Some(rest) = trimmed.strip_prefix("END RequestId: ") {
        return Message::End { request_id: Cow::Borrowed(token(rest).0) };
    }
    if let Some(rest) = trimmed.strip_prefix("REPORT RequestId: ") {
        let (request_id, rest) = token(rest);
        let mut report = Report { request_id: Cow::Borrowed(request_id), ..Report::default() };
        for (key, value) in fields(rest) {
            match key {
                "Duration" => report.duration_ms = number_before_unit(value),
                "Billed Duration" => report.billed_duration_ms = number_before_unit(value).map(|v| v as i64),
                "Memory Size" => report.memory_size_mb = number_before_unit(value).map(|v| v as i64),
                "Max Memory Used" => report.max_memory_used_mb = number_before_unit(value).map(|v| v as i64),
                "Init Duration" => report.init_duration_ms = number_before_unit(value),
                "Restore Duration" => report.restore_duration_ms = number_before_unit(value),
                "Status" => report.status = Some(Cow::Borrowed(value)),
                "Error Type" => report.error_type = Some(Cow::Borrowed(value)),
                "XRAY TraceId" => report.trace_id = Some(Cow::Borrowed(value)),
                _ => {}
            }
        }
        return Message::Report(report);
    }
    if let Some(rest) = trimmed.strip_prefix("INIT_START") {
        let mut runtime_version = None;
        for (key, value) in fields(rest.trim_start()) {
            if key == "Runtime Version" {
                runtime_version = Some(Cow::Borrowed(value));
            }
        }
        return Message::InitStart { runtime_version, function_version: None };
    }
    if let Some(rest) = trimmed.strip_prefix("INIT_REPORT") {
        let mut report = (None, None, None);
        for (key, value) in fields(rest.trim_start()) {
            match key {
                "Init Duration" => report.0 = number_before_unit(value),
                "Status" => report.1 = Some(Cow::Borrowed(value)),
                "Error Type" => report.2 = Some(Cow::Borrowed(value)),
                _ => {}
            }
        }
        return Message::InitReport { duration_ms: report.0, status: report.1, error_type: report.2 };
    }
    for (prefix, kind) in [("EXTENSION", "extension"), ("TELEMETRY", "telemetry"), ("LOGS\t", "logs")] {
        if trimmed.starts_with(prefix) {
            return Message::PlatformNotice { kind };
        }
    }
    // `RequestId: <id> Error: Runtime exited with error: …`
    if trimmed.starts_with("RequestId: ") || trimmed.starts_with("Error: Runtime exited") {
        if let Some(exit) = runtime_exit(trimmed) {
            return exit;
        }
    }
    parse_app_line(trimmed)
}

/// `RequestId: <id> Error: Runtime exited with error: signal: killed` (and the `Runtime.ExitError` line).
fn runtime_exit(text: &str) -> Option<Message<'_>> {
    let at = text.find("Runtime exited with error")?;
    let request_id = text
        .find("RequestId: ")
        .map(|i| token(&text[i + "RequestId: ".len()..]).0)
        .filter(|id| is_request_id(id))
        .map(Cow::Borrowed);
    let error = text[at..].lines().next().unwrap_or_default();
    let error_type = if text.contains("Runtime.OutOfMemory") { "Runtime.OutOfMemory" } else { "Runtime.ExitError" };
    Some(Message::RuntimeExit { request_id, error: Cow::Borrowed(error), error_type: Cow::Borrowed(error_type) })
}

/// Application lines of the managed runtimes.
fn parse_app_line(text: &str) -> Message<'_> {
    // Python: `[LEVEL]\t<ts>\t<request id>\t<message>` or `[LEVEL] message`.
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((level, rest)) = rest.split_once(']') {
            if let Some(level) = normalise_level(level) {
                let rest = rest.trim_start_matches([' ', '\t']);
                if let Some((ts, after)) = timestamp::parse_prefix(rest) {
                    let after = after_separator(&rest[after..]);
                    let (id, message) = token(after);
                    if is_request_id(id) {
                        return app(Some(ts), Some(id), Some(level), message);
                    }
                    return app(Some(ts), None, Some(level), after);
                }
                return app(None, None, Some(level), rest);
            }
        }
    }
    if let Some((ts, len)) = timestamp::parse_prefix(text) {
        let rest = after_separator(&text[len..]);
        let (id, after_id) = token(rest);
        if is_request_id(id) {
            // Node.js / .NET: `<ts>\t<id>\t<LEVEL>\t<message>`; Java: `<ts> <id> <LEVEL> <logger> - <message>`.
            let (level, after_level) = token(after_id);
            if let Some(level) = normalise_level(level) {
                return app(Some(ts), Some(id), Some(level), after_level);
            }
            if let Some(at) = after_id.find("Task timed out after") {
                return timeout(Some(id), &after_id[at..]);
            }
            return app(Some(ts), Some(id), None, after_id);
        }
        // Go's log package: `2024/01/01 00:00:00 message`.
        return app(Some(ts), None, None, rest);
    }
    let (first, after_first) = token(text);
    if is_request_id(first) {
        if let Some(at) = after_first.find("Task timed out after") {
            return timeout(Some(first), &after_first[at..]);
        }
        let (level, after_level) = token(after_first);
        return match normalise_level(level) {
            Some(level) => app(None, Some(first), Some(level), after_level),
            None => app(None, Some(first), None, after_first),
        };
    }
    if let Some(at) = text.find("Task timed out after") {
        return timeout(None, &text[at..]);
    }
    // A JSON application line (structured logging libraries, Lambda's JSON log format for app logs).
    if text.starts_with('{') {
        if let Ok(json) = serde_json::from_str::<Json>(text) {
            if let Some(message) = parse_json_app(&json, text) {
                return message;
            }
        }
    }
    let level = LEVELS
        .iter()
        .find(|l| text.starts_with(*l) && text[l.len()..].starts_with([' ', ':', '\t']))
        .and_then(|l| normalise_level(l));
    app(None, None, level, text)
}

/// `text` without the spaces and tabs it starts with.
fn after_separator(text: &str) -> &str {
    let blanks = text.bytes().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &text[blanks..]
}

fn app<'a>(ts: Option<i64>, request_id: Option<&'a str>, level: Option<&'static str>, message: &'a str) -> Message<'a> {
    Message::App {
        ts_micros: ts,
        request_id: request_id.map(Cow::Borrowed),
        level: level.map(Cow::Borrowed),
        message: Cow::Borrowed(message),
    }
}

fn timeout<'a>(request_id: Option<&'a str>, message: &'a str) -> Message<'a> {
    let seconds = message.strip_prefix("Task timed out after").and_then(number_before_unit);
    Message::Timeout { request_id: request_id.map(Cow::Borrowed), seconds }
}

fn json_str<'j>(json: &'j Json, key: &str) -> Option<&'j str> {
    json.get(key)?.as_str()
}

fn json_f64(json: &Json, key: &str) -> Option<f64> {
    json.get(key)?.as_f64().filter(|v| v.is_finite())
}

fn owned(text: Option<&str>) -> Option<Cow<'static, str>> {
    text.map(|t| Cow::Owned(t.to_string()))
}

/// The `Root=` part of an X-Ray trace header (`Root=1-…;Parent=…;Sampled=1`).
pub fn trace_root(header: &str) -> &str {
    header.split(';').find_map(|part| part.trim().strip_prefix("Root=")).unwrap_or(header)
}

/// Parses a message in Lambda's JSON log format (`{"time":…,"type":"platform.…","record":…}` and JSON
/// application lines). `None` when the text is not JSON at all; it is then a text-format message.
pub fn parse_json(text: &str) -> Option<(Option<i64>, Message<'static>)> {
    let json: Json = serde_json::from_str(text).ok()?;
    Some(parse_json_value(&json, text))
}

/// `parse_json` for a line already parsed as `json`.
pub fn parse_json_value(json: &Json, text: &str) -> (Option<i64>, Message<'static>) {
    let ts = json_str(json, "time").or_else(|| json_str(json, "timestamp")).and_then(timestamp::parse);
    let Some(kind) = json_str(json, "type").filter(|t| t.starts_with("platform.")) else {
        let message = parse_json_app(json, text).unwrap_or_else(|| Message::App {
            ts_micros: ts,
            request_id: None,
            level: None,
            message: Cow::Owned(text.to_string()),
        });
        return (ts, into_owned(message));
    };
    let null = Json::Null;
    (ts, platform_message(kind, json.get("record").unwrap_or(&null)))
}

/// The message of a `platform.*` event from its `record`.
fn platform_message(kind: &str, record: &Json) -> Message<'static> {
    let request_id = || owned(json_str(record, "requestId")).unwrap_or(Cow::Borrowed(""));
    let trace = record.get("tracing").and_then(|t| json_str(t, "value")).map(|v| Cow::Owned(trace_root(v).to_string()));
    match kind {
        "platform.start" => {
            Message::Start { request_id: request_id(), version: owned(json_str(record, "version")), trace_id: trace }
        }
        "platform.runtimeDone" => Message::RuntimeDone {
            request_id: request_id(),
            status: owned(json_str(record, "status")),
            error_type: owned(json_str(record, "errorType")),
        },
        "platform.report" => {
            let null = Json::Null;
            let metrics = record.get("metrics").unwrap_or(&null);
            Message::Report(Report {
                request_id: request_id(),
                duration_ms: json_f64(metrics, "durationMs"),
                billed_duration_ms: json_f64(metrics, "billedDurationMs").map(|v| v as i64),
                memory_size_mb: json_f64(metrics, "memorySizeMB").map(|v| v as i64),
                max_memory_used_mb: json_f64(metrics, "maxMemoryUsedMB").map(|v| v as i64),
                init_duration_ms: json_f64(metrics, "initDurationMs"),
                restore_duration_ms: json_f64(metrics, "restoreDurationMs"),
                status: owned(json_str(record, "status")),
                error_type: owned(json_str(record, "errorType")),
                trace_id: trace,
            })
        }
        "platform.initStart" => Message::InitStart {
            runtime_version: owned(json_str(record, "runtimeVersion")),
            function_version: owned(json_str(record, "functionVersion")),
        },
        "platform.initReport" | "platform.initRuntimeDone" => Message::InitReport {
            duration_ms: record.get("metrics").and_then(|m| json_f64(m, "durationMs")),
            status: owned(json_str(record, "status")),
            error_type: owned(json_str(record, "errorType")),
        },
        "platform.extension" => Message::PlatformNotice { kind: "extension" },
        "platform.telemetrySubscription" => Message::PlatformNotice { kind: "telemetry" },
        "platform.logsDropped" => Message::PlatformNotice { kind: "logs_dropped" },
        _ => Message::PlatformNotice { kind: "platform" },
    }
}

/// A JSON application line: `{"timestamp", "level", "message", "requestId" | "AWSRequestId"}` and the
/// `{"errorType", "errorMessage", "stackTrace"}` objects runtimes print for unhandled errors.
fn parse_json_app<'a>(json: &Json, text: &'a str) -> Option<Message<'a>> {
    let object = json.as_object()?;
    let ts =
        ["timestamp", "time", "@timestamp"].iter().find_map(|k| object.get(*k)?.as_str()).and_then(timestamp::parse);
    let request_id = ["requestId", "AWSRequestId", "aws_request_id", "request_id"]
        .iter()
        .find_map(|k| object.get(*k)?.as_str())
        .filter(|id| is_request_id(id));
    if let (Some(error_type), Some(error_message)) = (json_str(json, "errorType"), json_str(json, "errorMessage")) {
        if error_message.contains("Runtime exited with error") || error_type == "Runtime.ExitError" {
            let request_id = error_message
                .find("RequestId: ")
                .map(|i| token(&error_message[i + 11..]).0)
                .filter(|id| is_request_id(id))
                .map(|id| Cow::Owned(id.to_string()));
            return Some(Message::RuntimeExit {
                request_id,
                error: Cow::Owned(error_message.to_string()),
                error_type: Cow::Owned(error_type.to_string()),
            });
        }
        if error_message.contains("Task timed out after") {
            return Some(timeout_owned(request_id, error_message));
        }
    }
    let level = ["level", "levelname", "severity", "log.level"]
        .iter()
        .find_map(|k| object.get(*k)?.as_str())
        .and_then(normalise_level);
    let level = level.or_else(|| json_str(json, "errorType").map(|_| "ERROR"));
    let message = match object.get("message").or_else(|| object.get("msg")) {
        Some(Json::String(message)) if object.len() <= 4 => Cow::Owned(message.clone()),
        // Keep the whole object when it carries more than the message: the extra keys are evidence.
        _ => Cow::Borrowed(text),
    };
    Some(Message::App {
        ts_micros: ts,
        request_id: request_id.map(|id| Cow::Owned(id.to_string())),
        level: level.map(Cow::Borrowed),
        message,
    })
}

fn timeout_owned(request_id: Option<&str>, message: &str) -> Message<'static> {
    let seconds = message.find("Task timed out after").and_then(|at| number_before_unit(&message[at + 20..]));
    Message::Timeout { request_id: request_id.map(|id| Cow::Owned(id.to_string())), seconds }
}

fn into_owned(message: Message<'_>) -> Message<'static> {
    let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
    let own_opt = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
    match message {
        Message::Start { request_id, version, trace_id } => {
            Message::Start { request_id: own(request_id), version: own_opt(version), trace_id: own_opt(trace_id) }
        }
        Message::End { request_id } => Message::End { request_id: own(request_id) },
        Message::Report(report) => Message::Report(report.to_static()),
        Message::InitStart { runtime_version, function_version } => Message::InitStart {
            runtime_version: own_opt(runtime_version),
            function_version: own_opt(function_version),
        },
        Message::InitReport { duration_ms, status, error_type } => {
            Message::InitReport { duration_ms, status: own_opt(status), error_type: own_opt(error_type) }
        }
        Message::RuntimeDone { request_id, status, error_type } => Message::RuntimeDone {
            request_id: own(request_id),
            status: own_opt(status),
            error_type: own_opt(error_type),
        },
        Message::Timeout { request_id, seconds } => Message::Timeout { request_id: own_opt(request_id), seconds },
        Message::RuntimeExit { request_id, error, error_type } => {
            Message::RuntimeExit { request_id: own_opt(request_id), error: own(error), error_type: own(error_type) }
        }
        Message::PlatformNotice { kind } => Message::PlatformNotice { kind },
        Message::App { ts_micros, request_id, level, message } => {
            Message::App { ts_micros, request_id: own_opt(request_id), level: own_opt(level), message: own(message) }
        }
    }
}

/// A string value, or anything else (skipped without building it).
enum MaybeStr<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'a> MaybeStr<'a> {
    fn str(self) -> Option<Cow<'a, str>> {
        match self {
            MaybeStr::Str(text) => Some(text),
            MaybeStr::Other => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(MaybeStr::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(MaybeStr::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(MaybeStr::Other)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The top level of a JSON log line, read straight from its text: no `serde_json::Value` is built but
/// for a platform event's `record`.
#[derive(Default)]
struct JsonLine<'a> {
    keys: usize,
    time: Option<Cow<'a, str>>,
    timestamp: Option<Cow<'a, str>>,
    at_timestamp: Option<Cow<'a, str>>,
    kind: Option<Cow<'a, str>>,
    record: Option<Json>,
    /// `level`, `levelname`, `severity`, `log.level`, in that order of precedence.
    levels: [Option<Cow<'a, str>>; 4],
    /// `requestId`, `AWSRequestId`, `aws_request_id`, `request_id`, in that order of precedence.
    request_ids: [Option<Cow<'a, str>>; 4],
    message: Option<MaybeStr<'a>>,
    msg: Option<MaybeStr<'a>>,
    has_error_type: bool,
    /// A key of a CloudWatch Logs event around a message (`logGroup`, `@message`, ...): `events` reads it.
    has_event_key: bool,
}

impl<'de> serde::Deserialize<'de> for JsonLine<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonLine<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut line = JsonLine::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    line.keys += 1;
                    let text = |map: &mut A| map.next_value::<MaybeStr<'de>>().map(MaybeStr::str);
                    match key.as_ref() {
                        "time" => line.time = text(&mut map)?,
                        "timestamp" => line.timestamp = text(&mut map)?,
                        "@timestamp" => line.at_timestamp = text(&mut map)?,
                        "type" => line.kind = text(&mut map)?,
                        "record" => line.record = Some(map.next_value::<Json>()?),
                        "level" => line.levels[0] = text(&mut map)?,
                        "levelname" => line.levels[1] = text(&mut map)?,
                        "severity" => line.levels[2] = text(&mut map)?,
                        "log.level" => line.levels[3] = text(&mut map)?,
                        "requestId" => line.request_ids[0] = text(&mut map)?,
                        "AWSRequestId" => line.request_ids[1] = text(&mut map)?,
                        "aws_request_id" => line.request_ids[2] = text(&mut map)?,
                        "request_id" => line.request_ids[3] = text(&mut map)?,
                        "message" => line.message = Some(map.next_value::<MaybeStr<'de>>()?),
                        "msg" => line.msg = Some(map.next_value::<MaybeStr<'de>>()?),
                        "errorType" => {
                            line.has_error_type = true;
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        "logGroup" | "log_group" | "logGroupName" | "@log" | "logStream" | "log_stream"
                        | "logStreamName" | "@logStream" | "@message" | "eventId" | "ingestionTime" => {
                            line.has_event_key = true;
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(line)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// `parse_json` for the bulk of JSON log lines (platform events and application lines), without
/// building a `serde_json::Value`; text is borrowed where it has no escapes. `None` for anything else
/// (not JSON, not a log line, an unhandled-error object): `parse_json` then decides.
pub fn parse_json_fast(text: &str) -> Option<(Option<i64>, Message<'_>)> {
    let line: JsonLine<'_> = serde_json::from_str(text).ok()?;
    if let Some(kind) = line.kind.as_deref().filter(|k| k.starts_with("platform.")) {
        let ts = line.time.as_deref().or(line.timestamp.as_deref()).and_then(timestamp::parse);
        let record = line.record.unwrap_or(Json::Null);
        return Some((ts, platform_message(kind, &record)));
    }
    let has_message = line.message.is_some() || line.msg.is_some();
    let has_time_or_level = line.timestamp.is_some() || line.time.is_some() || line.levels[0].is_some();
    if !has_message || !has_time_or_level || line.has_error_type || line.has_event_key {
        return None;
    }
    let ts = line.time.as_deref().or(line.timestamp.as_deref()).and_then(timestamp::parse);
    let app_ts =
        line.timestamp.as_deref().or(line.time.as_deref()).or(line.at_timestamp.as_deref()).and_then(timestamp::parse);
    let request_id = line.request_ids.into_iter().flatten().next().filter(|id| is_request_id(id));
    let level = line.levels.iter().flatten().next().and_then(|l| normalise_level(l));
    let message = match line.message.or(line.msg) {
        Some(MaybeStr::Str(message)) if line.keys <= 4 => message,
        _ => Cow::Borrowed(text),
    };
    Some((ts, Message::App { ts_micros: app_ts, request_id, level: level.map(Cow::Borrowed), message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plain_decimals_read_as_parse_reads_them(text in "[0-9]{0,12}(\\.[0-9]{0,8})?|[ -~]{0,10}") {
            if let Some(value) = plain_decimal(&text) {
                prop_assert_eq!(Some(value.to_bits()), text.parse::<f64>().ok().map(f64::to_bits), "{}", text);
            }
        }
    }

    #[test]
    fn numbers_before_units_read_as_their_first_word_parses() {
        for text in
            ["52.41 ms", "53 ms", "52.41", "52.41ms", " 52.41 ms", "52.41\tms", "1. ms", "-3 ms", "1e3 ms", "", "ms"]
        {
            let expected = text.split_whitespace().next().and_then(|w| w.parse::<f64>().ok());
            assert_eq!(number_before_unit(text), expected, "{text:?}");
        }
    }

    #[test]
    fn report_numbers_take_the_plain_path_where_they_can() {
        for text in ["52.41", "0.5", "1234567.000001", "53", "0"] {
            assert_eq!(plain_decimal(text), text.parse::<f64>().ok(), "{text}");
        }
        for text in ["1.", ".5", "-1", "1e3", "1234567890.1234567", "", "12a"] {
            assert_eq!(plain_decimal(text), None, "{text}");
        }
    }

    /// The fast path must say exactly what the `Value` path says, or leave the line to it.
    fn check(text: &str, fast_expected: bool) {
        let slow = parse_json(text).expect("valid JSON");
        match parse_json_fast(text) {
            Some(fast) => {
                assert!(fast_expected, "fast path took {text}");
                assert_eq!(fast.0, slow.0, "{text}");
                assert_eq!(fast.1, slow.1, "{text}");
            }
            None => assert!(!fast_expected, "fast path left {text}"),
        }
    }

    #[test]
    fn the_fast_json_path_agrees_with_the_value_path() {
        let id = "8f507cfc-1a2b-4697-b07a-ac58fc914c95";
        check(
            &format!(
                r#"{{"time":"2024-03-05T10:00:00.300Z","type":"platform.start","record":{{"requestId":"{id}","version":"$LATEST","tracing":{{"value":"Root=1-65e6ed80-aaaaaaaaaaaaaaaaaaaaaaaa;Sampled=1"}}}}}}"#
            ),
            true,
        );
        check(
            &format!(
                r#"{{"time":"2024-03-05T10:00:00.410Z","type":"platform.report","record":{{"requestId":"{id}","metrics":{{"durationMs":99.1,"billedDurationMs":100,"memorySizeMB":512,"maxMemoryUsedMB":120,"initDurationMs":410.2}},"status":"timeout","errorType":"Sandbox.Timedout"}}}}"#
            ),
            true,
        );
        check(
            r#"{"time":"2024-03-05T10:00:00.000Z","type":"platform.initStart","record":{"runtimeVersion":"python:3.12.v18","functionVersion":"$LATEST"}}"#,
            true,
        );
        check(
            &format!(
                r#"{{"timestamp":"2024-03-05T10:00:00.310Z","level":"WARNING","message":"slow \"downstream\"\tok","requestId":"{id}"}}"#
            ),
            true,
        );
        check(
            &format!(
                r#"{{"timestamp":"2024-03-05T10:00:00.310Z","level":"INFO","message":"m","logger":"root","requestId":"{id}","extra":1}}"#
            ),
            true,
        );
        check(r#"{"time":"2024-03-05T10:00:00Z","levelname":"nope","level":"debug","msg":"x"}"#, true);
        check(r#"{"timestamp":"2024-03-05T10:00:00Z","message":{"nested":true},"level":"INFO"}"#, true);
        check(r#"{"level":"ERROR","message":"no time","requestId":"not-an-id"}"#, true);
        // Left to the Value path: unhandled-error objects, objects that are no log line, non-objects.
        check(
            &format!(
                r#"{{"errorType":"Runtime.ExitError","errorMessage":"RequestId: {id} Error: Runtime exited with error: signal: killed","level":"ERROR","message":"x"}}"#
            ),
            false,
        );
        check(r#"{"order":42}"#, false);
        check(r#"{"message":"no time or level"}"#, false);
        check(r#"[1,2]"#, false);
    }
}
