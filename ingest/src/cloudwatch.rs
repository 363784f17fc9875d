//! CloudWatch Logs: subscription-filter payloads (gzip JSON `DATA_MESSAGE`, raw or base64 as delivered
//! by Lambda, Kinesis, Firehose or Kafka) and export-to-S3 objects (`<prefix>/<task id>/<log stream>/NNNNNN.gz`).

use serde::Deserialize;

/// A decoded subscription payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription<'a> {
    pub message_type: &'a str,
    #[serde(default)]
    pub owner: Option<&'a str>,
    #[serde(default)]
    pub log_group: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub log_stream: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub log_events: Vec<LogEvent<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct LogEvent<'a> {
    #[serde(default, borrow)]
    pub id: Option<std::borrow::Cow<'a, str>>,
    pub timestamp: i64,
    #[serde(borrow)]
    pub message: std::borrow::Cow<'a, str>,
}

/// The function a log group belongs to: `/aws/lambda/<name>`.
pub fn function_of_group(log_group: &str) -> Option<&str> {
    log_group.strip_prefix("/aws/lambda/").filter(|name| !name.is_empty())
}

/// The log stream an export object belongs to, from its key. The export layout is
/// `<prefix>/<task id>/<log stream>/NNNNNN.gz`; log stream names contain slashes
/// (`2024/01/01/[$LATEST]…`), so the stream is everything between the task id and the file name.
pub fn export_stream_of_key(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let file = parts.last()?;
    let stem = file.strip_suffix(".gz").unwrap_or(file);
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) || parts.len() < 3 {
        return None;
    }
    let dirs = &parts[..parts.len() - 1];
    // The task id is a UUID; take the stream after the last one.
    let task_idx = dirs.iter().rposition(|part| crate::lambda::is_request_id(part));
    let stream_parts = match task_idx {
        Some(idx) if idx + 1 < dirs.len() => &dirs[idx + 1..],
        _ => &dirs[dirs.len() - 1..],
    };
    Some(stream_parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_keys_give_their_log_stream() {
        assert_eq!(
            export_stream_of_key("exports/0e2c5ba9-6d3b-4c1a-a1b2-1234567890ab/2024/01/01/[$LATEST]abcdef/000000.gz")
                .as_deref(),
            Some("2024/01/01/[$LATEST]abcdef")
        );
        assert_eq!(export_stream_of_key("x/task/stream-1/000001.gz").as_deref(), Some("stream-1"));
        assert_eq!(export_stream_of_key("x/task/stream-1/notes.txt"), None);
        assert_eq!(export_stream_of_key("000000.gz"), None);
    }

    #[test]
    fn lambda_log_groups_name_their_function() {
        assert_eq!(function_of_group("/aws/lambda/orders-api"), Some("orders-api"));
        assert_eq!(function_of_group("/aws/lambda/"), None);
        assert_eq!(function_of_group("/ecs/web"), None);
    }
}
