//! Trigger events that functions log on entry (API Gateway v1/v2, function URLs, ALB, SQS, SNS, S3,
//! Kinesis, DynamoDB, EventBridge, Kafka, CloudWatch Logs, Firehose): who called, from where, how.

use serde_json::Value as Json;

/// What a trigger event says about the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trigger {
    pub trigger: &'static str,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub principal: Option<String>,
    pub http_method: Option<String>,
    pub http_path: Option<String>,
}

fn path<'j>(json: &'j Json, keys: &[&str]) -> Option<&'j Json> {
    keys.iter().try_fold(json, |json, key| json.get(key))
}

fn text(json: &Json, keys: &[&str]) -> Option<String> {
    path(json, keys)?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// A header, case-insensitively, from `headers` or `multiValueHeaders`.
fn header(event: &Json, name: &str) -> Option<String> {
    for key in ["headers", "multiValueHeaders"] {
        if let Some(Json::Object(headers)) = event.get(key) {
            for (header, value) in headers {
                if header.eq_ignore_ascii_case(name) {
                    match value {
                        Json::String(s) => return Some(s.clone()),
                        Json::Array(values) => return values.first().and_then(Json::as_str).map(str::to_string),
                        _ => {}
                    }
                }
            }
        }
    }
    None
}

fn first_forwarded(value: Option<String>) -> Option<String> {
    value.map(|v| v.split(',').next().unwrap_or_default().trim().to_string()).filter(|v| !v.is_empty())
}

/// Classifies a JSON document as a trigger event; `None` when it is not one.
pub fn classify(event: &Json) -> Option<Trigger> {
    let object = event.as_object()?;
    if let Some(context) = object.get("requestContext") {
        if context.get("elb").is_some() {
            return Some(Trigger {
                trigger: "alb",
                source_ip: first_forwarded(header(event, "x-forwarded-for")),
                user_agent: header(event, "user-agent"),
                principal: None,
                http_method: text(event, &["httpMethod"]),
                http_path: text(event, &["path"]),
            });
        }
        if let Some(http) = context.get("http") {
            let function_url = text(context, &["domainName"]).is_some_and(|d| d.contains(".lambda-url."));
            let principal = text(context, &["authorizer", "iam", "userArn"])
                .or_else(|| text(context, &["authorizer", "jwt", "claims", "sub"]))
                .or_else(|| text(context, &["authorizer", "lambda", "principalId"]))
                .or_else(|| text(context, &["authorizer", "iam", "callerId"]));
            return Some(Trigger {
                trigger: if function_url { "function_url" } else { "api_gateway" },
                source_ip: text(http, &["sourceIp"]),
                user_agent: text(http, &["userAgent"]).or_else(|| header(event, "user-agent")),
                principal,
                http_method: text(http, &["method"]),
                http_path: text(event, &["rawPath"]).or_else(|| text(http, &["path"])),
            });
        }
        if object.contains_key("httpMethod") {
            let principal = text(context, &["authorizer", "principalId"])
                .or_else(|| text(context, &["authorizer", "claims", "sub"]))
                .or_else(|| text(context, &["identity", "userArn"]))
                .or_else(|| text(context, &["identity", "cognitoIdentityId"]));
            return Some(Trigger {
                trigger: "api_gateway",
                source_ip: text(context, &["identity", "sourceIp"])
                    .or_else(|| first_forwarded(header(event, "x-forwarded-for"))),
                user_agent: text(context, &["identity", "userAgent"]).or_else(|| header(event, "user-agent")),
                principal,
                http_method: text(event, &["httpMethod"]),
                http_path: text(event, &["path"]),
            });
        }
    }
    if let Some(Json::Array(records)) = object.get("Records") {
        let record = records.first()?;
        let source = text(record, &["eventSource"]).or_else(|| text(record, &["EventSource"]))?;
        return Some(match source.as_str() {
            "aws:sqs" => {
                Trigger { trigger: "sqs", principal: text(record, &["attributes", "SenderId"]), ..Trigger::default() }
            }
            "aws:sns" => {
                Trigger { trigger: "sns", principal: text(record, &["Sns", "TopicArn"]), ..Trigger::default() }
            }
            "aws:s3" => Trigger {
                trigger: "s3",
                source_ip: text(record, &["requestParameters", "sourceIPAddress"]),
                principal: text(record, &["userIdentity", "principalId"]),
                http_method: text(record, &["eventName"]),
                http_path: text(record, &["s3", "object", "key"]),
                ..Trigger::default()
            },
            "aws:kinesis" => {
                Trigger { trigger: "kinesis", principal: text(record, &["eventSourceARN"]), ..Trigger::default() }
            }
            "aws:dynamodb" => {
                Trigger { trigger: "dynamodb", principal: text(record, &["eventSourceARN"]), ..Trigger::default() }
            }
            _ => return None,
        });
    }
    if object.contains_key("detail-type") && object.contains_key("source") {
        let principal = text(event, &["detail", "userIdentity", "arn"]).or_else(|| text(event, &["source"]));
        return Some(Trigger {
            trigger: "eventbridge",
            source_ip: text(event, &["detail", "sourceIPAddress"]),
            user_agent: text(event, &["detail", "userAgent"]),
            principal,
            ..Trigger::default()
        });
    }
    if let Some(source) = object.get("eventSource").and_then(Json::as_str) {
        if source == "aws:kafka" || source == "SelfManagedKafka" {
            return Some(Trigger {
                trigger: "kafka",
                principal: text(event, &["eventSourceArn"]),
                ..Trigger::default()
            });
        }
    }
    if object.contains_key("awslogs") {
        return Some(Trigger { trigger: "cloudwatch_logs", ..Trigger::default() });
    }
    if object.contains_key("deliveryStreamArn") {
        return Some(Trigger {
            trigger: "firehose",
            principal: text(event, &["deliveryStreamArn"]),
            ..Trigger::default()
        });
    }
    None
}

/// Finds a trigger event in an application log message: the message itself, or JSON after a prefix
/// such as `EVENT: ` or `Received event: `.
pub fn find_in_message(message: &str) -> Option<(Trigger, usize)> {
    let start = message.find('{')?;
    // Avoid parsing every line that happens to contain a brace: trigger events are objects with one of
    // these keys.
    let candidate = &message[start..];
    if !["requestContext", "Records", "detail-type", "eventSource", "awslogs", "deliveryStreamArn"]
        .iter()
        .any(|k| candidate.contains(k))
    {
        return None;
    }
    let json: Json = serde_json::from_str(candidate.trim_end()).ok()?;
    classify(&json).map(|trigger| (trigger, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Json {
        let path = format!(
            "{}/../tests/data/aws-lambda-events/{name}",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
    }

    fn check(name: &str, expected: Trigger) {
        assert_eq!(classify(&fixture(name)), Some(expected), "{name}");
    }

    #[test]
    fn aws_trigger_samples_are_classified_with_their_callers() {
        check(
            "example-apigw-request.json",
            Trigger {
                trigger: "api_gateway",
                source_ip: Some("192.168.196.186".into()),
                user_agent: Some("PostmanRuntime/2.4.5".into()),
                principal: Some("admin".into()),
                http_method: Some("POST".into()),
                http_path: Some("/hello/world".into()),
            },
        );
        let v2 = classify(&fixture("example-apigw-v2-request-iam.json")).unwrap();
        assert_eq!(v2.trigger, "api_gateway");
        assert!(v2.principal.is_some(), "{v2:?}");
        assert!(v2.source_ip.is_some());
        let alb = classify(&fixture("example-alb-lambda-target-request-multivalue-headers.json")).unwrap();
        assert_eq!(alb.trigger, "alb");
        assert_eq!(alb.http_method.as_deref(), Some("GET"));
        for (name, trigger) in [
            ("example-sqs-event.json", "sqs"),
            ("example-sns-event.json", "sns"),
            ("example-s3-event.json", "s3"),
            ("example-kinesis-event.json", "kinesis"),
            ("example-kafka-event.json", "kafka"),
            ("example-cloudwatch_logs-event.json", "cloudwatch_logs"),
            ("example-kinesis-firehose-event.json", "firehose"),
        ] {
            assert_eq!(classify(&fixture(name)).map(|t| t.trigger), Some(trigger), "{name}");
        }
        let s3 = classify(&fixture("example-s3-event.json")).unwrap();
        assert!(s3.source_ip.is_some(), "{s3:?}");
    }

    #[test]
    fn events_are_found_after_a_log_prefix_and_plain_json_is_not_a_trigger() {
        let message =
            r#"EVENT: {"httpMethod":"GET","path":"/x","requestContext":{"identity":{"sourceIp":"203.0.113.9"}}}"#;
        let (trigger, at) = find_in_message(message).unwrap();
        assert_eq!(at, 7);
        assert_eq!(trigger.source_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(find_in_message(r#"{"order": 42, "items": []}"#), None);
        assert_eq!(find_in_message("no json here"), None);
        assert_eq!(find_in_message(r#"{"Records": [}"#), None);
    }
}
