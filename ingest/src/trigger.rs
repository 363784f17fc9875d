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
    let candidate = candidate.trim_end();
    // Read into borrowed structs (a `Json` tree of a logged event was a twentieth of a whole ingest);
    // where that cannot be sure to read as the tree does (a key given twice: the tree keeps the last),
    // or the text is no JSON, the tree decides. Values in fields no trigger reads are skipped, not read:
    // an event whose only damage is there (a lone surrogate escape, a number past `f64`) is a trigger,
    // where the tree refused it.
    let trigger = match serde_json::from_str::<typed::Event<'_>>(candidate) {
        Ok(event) => event.classify(),
        Err(_) => classify(&serde_json::from_str::<Json>(candidate).ok()?),
    };
    trigger.map(|trigger| (trigger, start))
}

/// A trigger event in `lenient` field types: every field `classify` reads, the rest skipped.
mod typed {
    use std::borrow::Cow;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::{first_forwarded, Trigger};
    use crate::lenient::{other_values_are_default, skip_seq, First, Present, PresentText, Slot, Text};

    /// `text` of `classify`: a string that is not empty.
    fn text(value: &Text<'_>) -> Option<String> {
        value.get().filter(|s| !s.is_empty()).map(str::to_string)
    }

    /// The object in `field` of the object in `slot`, when both are objects.
    fn at<'s, T, U>(slot: Option<&'s Slot<T>>, field: impl FnOnce(&'s T) -> &'s Slot<U>) -> Option<&'s U> {
        field(slot?.value.as_ref()?).value.as_ref()
    }

    #[derive(serde::Deserialize)]
    pub(super) struct Event<'a> {
        #[serde(rename = "requestContext", default, borrow)]
        request_context: Slot<Context<'a>>,
        #[serde(rename = "httpMethod", default, borrow)]
        http_method: PresentText<'a>,
        #[serde(default, borrow)]
        path: Text<'a>,
        #[serde(rename = "rawPath", default, borrow)]
        raw_path: Text<'a>,
        #[serde(default, borrow)]
        headers: Headers<'a>,
        #[serde(rename = "multiValueHeaders", default, borrow)]
        multi_value_headers: Headers<'a>,
        #[serde(rename = "Records", default, borrow)]
        records: First<Record<'a>>,
        #[serde(rename = "detail-type", default)]
        detail_type: Present,
        #[serde(default, borrow)]
        source: PresentText<'a>,
        #[serde(default, borrow)]
        detail: Slot<Detail<'a>>,
        #[serde(rename = "eventSource", default, borrow)]
        event_source: Text<'a>,
        #[serde(rename = "eventSourceArn", default, borrow)]
        event_source_arn: Text<'a>,
        #[serde(default)]
        awslogs: Present,
        #[serde(rename = "deliveryStreamArn", default, borrow)]
        delivery_stream_arn: PresentText<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Context<'a> {
        #[serde(default)]
        elb: Present,
        #[serde(default, borrow)]
        http: Slot<Http<'a>>,
        #[serde(rename = "domainName", default, borrow)]
        domain_name: Text<'a>,
        #[serde(default, borrow)]
        authorizer: Slot<Authorizer<'a>>,
        #[serde(default, borrow)]
        identity: Slot<Identity<'a>>,
    }

    #[derive(serde::Deserialize)]
    struct Http<'a> {
        #[serde(rename = "sourceIp", default, borrow)]
        source_ip: Text<'a>,
        #[serde(rename = "userAgent", default, borrow)]
        user_agent: Text<'a>,
        #[serde(default, borrow)]
        method: Text<'a>,
        #[serde(default, borrow)]
        path: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Authorizer<'a> {
        #[serde(default, borrow)]
        iam: Slot<Iam<'a>>,
        #[serde(default, borrow)]
        jwt: Slot<Jwt<'a>>,
        #[serde(default, borrow)]
        lambda: Slot<LambdaAuthorizer<'a>>,
        #[serde(rename = "principalId", default, borrow)]
        principal_id: Text<'a>,
        #[serde(default, borrow)]
        claims: Slot<Claims<'a>>,
    }

    #[derive(serde::Deserialize)]
    struct Iam<'a> {
        #[serde(rename = "userArn", default, borrow)]
        user_arn: Text<'a>,
        #[serde(rename = "callerId", default, borrow)]
        caller_id: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Jwt<'a> {
        #[serde(default, borrow)]
        claims: Slot<Claims<'a>>,
    }

    #[derive(serde::Deserialize)]
    struct Claims<'a> {
        #[serde(default, borrow)]
        sub: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct LambdaAuthorizer<'a> {
        #[serde(rename = "principalId", default, borrow)]
        principal_id: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Identity<'a> {
        #[serde(rename = "sourceIp", default, borrow)]
        source_ip: Text<'a>,
        #[serde(rename = "userAgent", default, borrow)]
        user_agent: Text<'a>,
        #[serde(rename = "userArn", default, borrow)]
        user_arn: Text<'a>,
        #[serde(rename = "cognitoIdentityId", default, borrow)]
        cognito_identity_id: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(rename = "eventSource", default, borrow)]
        event_source: Text<'a>,
        #[serde(rename = "EventSource", default, borrow)]
        event_source_sns: Text<'a>,
        #[serde(default, borrow)]
        attributes: Slot<SenderId<'a>>,
        #[serde(rename = "Sns", default, borrow)]
        sns: Slot<TopicArn<'a>>,
        #[serde(rename = "requestParameters", default, borrow)]
        request_parameters: Slot<SourceIpAddress<'a>>,
        #[serde(rename = "userIdentity", default, borrow)]
        user_identity: Slot<PrincipalId<'a>>,
        #[serde(rename = "eventName", default, borrow)]
        event_name: Text<'a>,
        #[serde(default, borrow)]
        s3: Slot<S3<'a>>,
        #[serde(rename = "eventSourceARN", default, borrow)]
        event_source_arn: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct SenderId<'a> {
        #[serde(rename = "SenderId", default, borrow)]
        sender_id: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct TopicArn<'a> {
        #[serde(rename = "TopicArn", default, borrow)]
        topic_arn: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct SourceIpAddress<'a> {
        #[serde(rename = "sourceIPAddress", default, borrow)]
        source_ip_address: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct PrincipalId<'a> {
        #[serde(rename = "principalId", default, borrow)]
        principal_id: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct S3<'a> {
        #[serde(default, borrow)]
        object: Slot<S3Object<'a>>,
    }

    #[derive(serde::Deserialize)]
    struct S3Object<'a> {
        #[serde(default, borrow)]
        key: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Detail<'a> {
        #[serde(rename = "userIdentity", default, borrow)]
        user_identity: Slot<Arn<'a>>,
        #[serde(rename = "sourceIPAddress", default, borrow)]
        source_ip_address: Text<'a>,
        #[serde(rename = "userAgent", default, borrow)]
        user_agent: Text<'a>,
    }

    #[derive(serde::Deserialize)]
    struct Arn<'a> {
        #[serde(default, borrow)]
        arn: Text<'a>,
    }

    /// A header's value as `header` of `classify` reads it.
    enum HeaderValue<'a> {
        /// A string.
        One(Cow<'a, str>),
        /// An array's first element, when it is a string.
        First(Option<Cow<'a, str>>),
        Other,
    }

    /// `headers` or `multiValueHeaders` when an object: its entries in the order a `Json` map iterates
    /// them (by key, a repeated key's last value).
    #[derive(Default)]
    struct Headers<'a>(Vec<(Cow<'a, str>, HeaderValue<'a>)>);

    impl Event<'_> {
        fn header(&self, name: &str) -> Option<String> {
            for headers in [&self.headers, &self.multi_value_headers] {
                for (header, value) in &headers.0 {
                    if header.eq_ignore_ascii_case(name) {
                        match value {
                            HeaderValue::One(s) => return Some(s.to_string()),
                            HeaderValue::First(first) => return first.as_deref().map(str::to_string),
                            HeaderValue::Other => {}
                        }
                    }
                }
            }
            None
        }

        /// `classify`, step by step, on the typed event.
        pub(super) fn classify(&self) -> Option<Trigger> {
            if self.request_context.present {
                let context = self.request_context.value.as_ref();
                if context.is_some_and(|c| c.elb.0) {
                    return Some(Trigger {
                        trigger: "alb",
                        source_ip: first_forwarded(self.header("x-forwarded-for")),
                        user_agent: self.header("user-agent"),
                        principal: None,
                        http_method: text(&self.http_method.text),
                        http_path: text(&self.path),
                    });
                }
                if let Some(context) = context.filter(|c| c.http.present) {
                    let function_url = text(&context.domain_name).is_some_and(|d| d.contains(".lambda-url."));
                    let authorizer = Some(&context.authorizer);
                    let principal = at(authorizer, |a| &a.iam)
                        .and_then(|i| text(&i.user_arn))
                        .or_else(|| {
                            at(authorizer, |a| &a.jwt).and_then(|j| j.claims.value.as_ref()).and_then(|c| text(&c.sub))
                        })
                        .or_else(|| at(authorizer, |a| &a.lambda).and_then(|l| text(&l.principal_id)))
                        .or_else(|| at(authorizer, |a| &a.iam).and_then(|i| text(&i.caller_id)));
                    let http = context.http.value.as_ref();
                    return Some(Trigger {
                        trigger: if function_url { "function_url" } else { "api_gateway" },
                        source_ip: http.and_then(|h| text(&h.source_ip)),
                        user_agent: http.and_then(|h| text(&h.user_agent)).or_else(|| self.header("user-agent")),
                        principal,
                        http_method: http.and_then(|h| text(&h.method)),
                        http_path: text(&self.raw_path).or_else(|| http.and_then(|h| text(&h.path))),
                    });
                }
                if self.http_method.present {
                    let authorizer = context.and_then(|c| c.authorizer.value.as_ref());
                    let identity = context.and_then(|c| c.identity.value.as_ref());
                    let principal = authorizer
                        .and_then(|a| text(&a.principal_id))
                        .or_else(|| authorizer.and_then(|a| a.claims.value.as_ref()).and_then(|c| text(&c.sub)))
                        .or_else(|| identity.and_then(|i| text(&i.user_arn)))
                        .or_else(|| identity.and_then(|i| text(&i.cognito_identity_id)));
                    return Some(Trigger {
                        trigger: "api_gateway",
                        source_ip: identity
                            .and_then(|i| text(&i.source_ip))
                            .or_else(|| first_forwarded(self.header("x-forwarded-for"))),
                        user_agent: identity.and_then(|i| text(&i.user_agent)).or_else(|| self.header("user-agent")),
                        principal,
                        http_method: text(&self.http_method.text),
                        http_path: text(&self.path),
                    });
                }
            }
            if self.records.array {
                let record = self.records.first.as_ref()?.value.as_ref()?;
                let source = text(&record.event_source).or_else(|| text(&record.event_source_sns))?;
                return Some(match source.as_str() {
                    "aws:sqs" => Trigger {
                        trigger: "sqs",
                        principal: record.attributes.value.as_ref().and_then(|a| text(&a.sender_id)),
                        ..Trigger::default()
                    },
                    "aws:sns" => Trigger {
                        trigger: "sns",
                        principal: record.sns.value.as_ref().and_then(|s| text(&s.topic_arn)),
                        ..Trigger::default()
                    },
                    "aws:s3" => Trigger {
                        trigger: "s3",
                        source_ip: record.request_parameters.value.as_ref().and_then(|r| text(&r.source_ip_address)),
                        principal: record.user_identity.value.as_ref().and_then(|u| text(&u.principal_id)),
                        http_method: text(&record.event_name),
                        http_path: at(Some(&record.s3), |s| &s.object).and_then(|o| text(&o.key)),
                        ..Trigger::default()
                    },
                    "aws:kinesis" => {
                        Trigger { trigger: "kinesis", principal: text(&record.event_source_arn), ..Trigger::default() }
                    }
                    "aws:dynamodb" => {
                        Trigger { trigger: "dynamodb", principal: text(&record.event_source_arn), ..Trigger::default() }
                    }
                    _ => return None,
                });
            }
            if self.detail_type.0 && self.source.present {
                let detail = self.detail.value.as_ref();
                let principal = detail
                    .and_then(|d| d.user_identity.value.as_ref())
                    .and_then(|i| text(&i.arn))
                    .or_else(|| text(&self.source.text));
                return Some(Trigger {
                    trigger: "eventbridge",
                    source_ip: detail.and_then(|d| text(&d.source_ip_address)),
                    user_agent: detail.and_then(|d| text(&d.user_agent)),
                    principal,
                    ..Trigger::default()
                });
            }
            if let Some(source) = self.event_source.get() {
                if source == "aws:kafka" || source == "SelfManagedKafka" {
                    return Some(Trigger {
                        trigger: "kafka",
                        principal: text(&self.event_source_arn),
                        ..Trigger::default()
                    });
                }
            }
            if self.awslogs.0 {
                return Some(Trigger { trigger: "cloudwatch_logs", ..Trigger::default() });
            }
            if self.delivery_stream_arn.present {
                return Some(Trigger {
                    trigger: "firehose",
                    principal: text(&self.delivery_stream_arn.text),
                    ..Trigger::default()
                });
            }
            None
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for HeaderValue<'a> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ValueVisitor<'a>(PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for ValueVisitor<'a> {
                type Value = HeaderValue<'a>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<HeaderValue<'a>, E> {
                    Ok(HeaderValue::One(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValue<'a>, E> {
                    Ok(HeaderValue::One(Cow::Owned(v.to_string())))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<HeaderValue<'a>, E> {
                    Ok(HeaderValue::One(Cow::Owned(v)))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderValue<'a>, A::Error> {
                    let first = seq.next_element::<Text<'a>>()?.and_then(|t| t.0);
                    skip_seq(seq)?;
                    Ok(HeaderValue::First(first))
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HeaderValue<'a>, A::Error> {
                    crate::lenient::skip_map(map)?;
                    Ok(HeaderValue::Other)
                }
                other_values_are_default!(scalars => HeaderValue::Other);
            }
            deserializer.deserialize_any(ValueVisitor(PhantomData))
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Headers<'a> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct HeadersVisitor<'a>(PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for HeadersVisitor<'a> {
                type Value = Headers<'a>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers<'a>, A::Error> {
                    let mut entries: Vec<(Cow<'a, str>, HeaderValue<'a>)> = Vec::new();
                    while let Some(key) = map.next_key::<Text<'a>>()? {
                        let value = map.next_value::<HeaderValue<'a>>()?;
                        entries.push((key.0.unwrap_or_default(), value));
                    }
                    // A `Json` map: ordered by key, a repeated key holding its last value.
                    entries.reverse();
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    entries.dedup_by(|later, earlier| later.0 == earlier.0);
                    Ok(Headers(entries))
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<Headers<'a>, E> {
                    Ok(Headers::default())
                }
                other_values_are_default!(bool);
            }
            deserializer.deserialize_any(HeadersVisitor(PhantomData))
        }
    }
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

#[cfg(test)]
mod typed_tests {
    use super::*;
    use proptest::prelude::*;

    /// `find_in_message` through the tree alone, as it was.
    fn through_the_tree(message: &str) -> Option<(Trigger, usize)> {
        let start = message.find('{')?;
        let json: Json = serde_json::from_str(message[start..].trim_end()).ok()?;
        classify(&json).map(|trigger| (trigger, start))
    }

    fn typed(message: &str) -> Option<Option<Trigger>> {
        serde_json::from_str::<typed::Event<'_>>(message).ok().map(|event| event.classify())
    }

    #[test]
    fn every_aws_sample_event_is_read_without_a_tree_as_the_tree_reads_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/aws-lambda-events");
        let mut read = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let Ok(tree) = serde_json::from_str::<Json>(&text) else { continue };
            if !tree.is_object() {
                continue;
            }
            let typed = typed(&text).expect("a sample event has no repeated key");
            assert_eq!(typed, classify(&tree), "{text}");
            read += 1;
        }
        assert!(read >= 10, "{read} samples");
    }

    fn any_value() -> BoxedStrategy<String> {
        prop_oneof![
            Just("null".to_string()),
            Just("false".to_string()),
            Just("7".to_string()),
            Just("[]".to_string()),
            Just("[\"first\",\"second\"]".to_string()),
            Just("[1,\"x\"]".to_string()),
            Just("{}".to_string()),
            Just("\"\"".to_string()),
            Just("\"203.0.113.9, 10.0.0.1\"".to_string()),
            Just("\"x.lambda-url.us-east-1.on.aws\"".to_string()),
            Just("\"aws:sqs\"".to_string()),
            Just("\"aws:s3\"".to_string()),
            Just("\"aws:kafka\"".to_string()),
            Just("\"aws:sns\"".to_string()),
            Just("\"esc\\u00e9\\\"\"".to_string()),
            "[a-z:/.-]{0,10}".prop_map(|s| format!("\"{s}\"")),
        ]
        .boxed()
    }

    /// A JSON object of some of `keys`, any of them maybe twice, values from `value`.
    fn object(keys: &'static [&'static str], value: BoxedStrategy<String>) -> BoxedStrategy<String> {
        proptest::collection::vec((proptest::sample::select(keys), value), 0..keys.len().min(6) + 1)
            .prop_map(|fields| {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            })
            .boxed()
    }

    fn event() -> BoxedStrategy<String> {
        const LEAVES: &[&str] = &[
            "sourceIp",
            "userAgent",
            "method",
            "path",
            "userArn",
            "callerId",
            "sub",
            "principalId",
            "arn",
            "SenderId",
            "TopicArn",
            "sourceIPAddress",
            "key",
            "eventSource",
            "EventSource",
            "eventName",
            "eventSourceARN",
            "cognitoIdentityId",
            "domainName",
            "elb",
        ];
        let leaf = object(LEAVES, any_value());
        let nested = object(
            &[
                "claims",
                "object",
                "iam",
                "jwt",
                "lambda",
                "identity",
                "http",
                "authorizer",
                "attributes",
                "Sns",
                "s3",
                "userIdentity",
                "requestParameters",
                "sourceIp",
                "principalId",
                "sub",
                "userArn",
                "domainName",
                "elb",
            ],
            prop_oneof![2 => leaf.clone(), 1 => any_value()].boxed(),
        );
        let deep = object(
            &[
                "authorizer",
                "http",
                "identity",
                "elb",
                "domainName",
                "s3",
                "userIdentity",
                "eventSource",
                "EventSource",
                "eventName",
                "attributes",
                "Sns",
                "requestParameters",
                "eventSourceARN",
            ],
            prop_oneof![2 => nested.clone(), 1 => any_value()].boxed(),
        );
        let headers = object(&["User-Agent", "user-agent", "X-Forwarded-For", "x-forwarded-for", "Host"], any_value());
        let records = proptest::collection::vec(prop_oneof![3 => deep.clone(), 1 => any_value()], 0..3)
            .prop_map(|records| format!("[{}]", records.join(",")))
            .boxed();
        let top = prop_oneof![
            2 => deep.clone(), 1 => headers, 1 => records, 1 => nested, 2 => any_value()
        ]
        .boxed();
        object(
            &[
                "requestContext",
                "httpMethod",
                "path",
                "rawPath",
                "headers",
                "multiValueHeaders",
                "Records",
                "detail-type",
                "source",
                "detail",
                "eventSource",
                "eventSourceArn",
                "awslogs",
                "deliveryStreamArn",
                "body",
            ],
            top,
        )
    }

    /// An object of the given keys, each there or not, each value from its own strategy.
    fn shaped(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
        let fields: Vec<BoxedStrategy<Option<String>>> = fields
            .into_iter()
            .map(|(key, value)| {
                proptest::option::weighted(0.7, value).prop_map(move |v| v.map(|v| format!("\"{key}\":{v}"))).boxed()
            })
            .collect();
        fields.prop_map(|fields| format!("{{{}}}", fields.into_iter().flatten().collect::<Vec<_>>().join(","))).boxed()
    }

    /// API Gateway (both versions), function URLs and ALB events, in their own shapes, any field missing
    /// or of another type.
    fn http_event() -> BoxedStrategy<String> {
        let leaf = || {
            object(
                &["sourceIp", "userAgent", "method", "path", "userArn", "callerId", "sub", "principalId"],
                any_value(),
            )
        };
        let authorizer = shaped(vec![
            ("iam", leaf()),
            ("jwt", shaped(vec![("claims", leaf())])),
            ("lambda", leaf()),
            ("claims", leaf()),
            ("principalId", any_value()),
        ]);
        let context = shaped(vec![
            ("elb", prop_oneof![Just("{}".to_string()), any_value()].boxed()),
            ("http", prop_oneof![3 => leaf(), 1 => any_value()].boxed()),
            ("domainName", any_value()),
            ("authorizer", prop_oneof![3 => authorizer, 1 => any_value()].boxed()),
            ("identity", leaf()),
        ]);
        let headers =
            || object(&["User-Agent", "user-agent", "X-Forwarded-For", "x-forwarded-for", "Host"], any_value());
        shaped(vec![
            ("requestContext", prop_oneof![4 => context, 1 => any_value()].boxed()),
            ("httpMethod", any_value()),
            ("path", any_value()),
            ("rawPath", any_value()),
            ("headers", headers()),
            ("multiValueHeaders", headers()),
        ])
    }

    /// Records of SQS, SNS, S3, Kinesis and DynamoDB, in their own shapes.
    fn records_event() -> BoxedStrategy<String> {
        let leaf = || object(&["SenderId", "TopicArn", "sourceIPAddress", "principalId", "key"], any_value());
        let source = prop_oneof![
            Just("\"aws:sqs\"".to_string()),
            Just("\"aws:sns\"".to_string()),
            Just("\"aws:s3\"".to_string()),
            Just("\"aws:kinesis\"".to_string()),
            Just("\"aws:dynamodb\"".to_string()),
            any_value(),
        ]
        .boxed();
        let record = shaped(vec![
            ("eventSource", source.clone()),
            ("EventSource", source),
            ("attributes", leaf()),
            ("Sns", leaf()),
            ("requestParameters", leaf()),
            ("userIdentity", leaf()),
            ("eventName", any_value()),
            ("s3", shaped(vec![("object", leaf())])),
            ("eventSourceARN", any_value()),
        ]);
        let records = proptest::collection::vec(prop_oneof![4 => record, 1 => any_value()], 0..3)
            .prop_map(|records| format!("[{}]", records.join(",")))
            .boxed();
        shaped(vec![("Records", records)])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn an_event_of_a_known_shape_is_read_without_a_tree_as_the_tree_reads_it(
            event in prop_oneof![http_event(), records_event()]
        ) {
            let tree: Json = serde_json::from_str(&event).unwrap();
            match typed(&event) {
                Some(trigger) => prop_assert_eq!(&trigger, &classify(&tree), "{}", event),
                None => prop_assert!(crate::lenient::repeats_a_key(&event), "{}", event),
            }
        }


        #[test]
        fn a_logged_event_is_read_without_a_tree_as_the_tree_reads_it(event in event(), prefix in "(|EVENT: )") {
            let message = format!("{prefix}{event}");
            let tree: Json = serde_json::from_str(&event).unwrap();
            match typed(&event) {
                Some(trigger) => prop_assert_eq!(&trigger, &classify(&tree), "{}", event),
                // Left to the tree only for a key given twice.
                None => prop_assert!(crate::lenient::repeats_a_key(&event), "{}", event),
            }
            prop_assert_eq!(find_in_message(&message), through_the_tree(&message));
        }
    }
}
