//! CloudTrail: `{"Records": [...]}` files (gzipped or not), arrays of records, single records, and
//! events delivered by EventBridge (`{"detail-type": "AWS API Call via CloudTrail", "detail": {...}}`).

use serde_json::Value as Json;

use crate::timestamp;
use store::rows::{bounded, TableBuilder};
use store::tables::{Borrowed, CloudtrailRow};

/// JSON text columns are bounded so that one hostile record cannot blow up a batch.
pub const JSON_COLUMN_BYTES_MAX: usize = 64 * 1024;

/// Why a CloudTrail record was not stored as a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
}

/// The records in a CloudTrail document, whatever its shape.
pub fn records(document: &Json) -> Vec<&Json> {
    match document {
        Json::Array(items) => items.iter().collect(),
        Json::Object(object) => {
            if let Some(Json::Array(records)) = object.get("Records") {
                records.iter().collect()
            } else if let Some(detail) = object.get("detail").filter(|d| d.get("eventName").is_some()) {
                vec![detail]
            } else {
                vec![document]
            }
        }
        _ => vec![document],
    }
}

/// Whether a JSON document looks like CloudTrail (records or one event).
pub fn looks_like(document: &Json) -> bool {
    let first = match document {
        Json::Array(items) => items.first(),
        Json::Object(object) => match object.get("Records") {
            Some(Json::Array(records)) => records.first(),
            _ => object.get("detail").or(Some(document)),
        },
        _ => None,
    };
    first.is_some_and(|r| r.get("eventName").is_some() && r.get("eventSource").is_some())
}

fn text<'j>(json: &'j Json, key: &str) -> Option<&'j str> {
    json.get(key)?.as_str()
}

fn json_text(value: Option<&Json>) -> Option<String> {
    match value? {
        Json::Null => None,
        Json::String(s) => Some(bounded(s, JSON_COLUMN_BYTES_MAX).to_string()),
        other => {
            let text = other.to_string();
            Some(bounded(&text, JSON_COLUMN_BYTES_MAX).to_string())
        }
    }
}

/// The role session name of an assumed-role identity:
/// `arn:aws:sts::123:assumed-role/<role>/<session>`.
pub fn session_name(identity: &Json) -> Option<String> {
    session_of(text(identity, "arn"), text(identity, "type"), text(identity, "principalId"))
}

fn session_of(arn: Option<&str>, kind: Option<&str>, principal_id: Option<&str>) -> Option<String> {
    let from_arn = arn
        .and_then(|arn| arn.split_once(":assumed-role/"))
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, session)| session.to_string());
    // `principalId` of a role session is `<role id>:<session name>`.
    from_arn.or_else(|| {
        let is_session = matches!(kind, Some("AssumedRole" | "FederatedUser"));
        principal_id.filter(|_| is_session).and_then(|id| id.split_once(':')).map(|(_, session)| session.to_string())
    })
}

/// The fields of one record that its row is made of, read from a `Json` record or a `trail::Record`.
struct Parts<'r> {
    event_time: Option<&'r str>,
    event_source: Option<&'r str>,
    event_name: Option<&'r str>,
    aws_region: Option<&'r str>,
    source_ip: Option<&'r str>,
    user_agent: Option<&'r str>,
    identity_type: Option<&'r str>,
    /// `userIdentity.arn`, else `invokedBy`, else `sessionContext.sessionIssuer.arn`.
    principal_arn: Option<&'r str>,
    identity_arn: Option<&'r str>,
    identity_account: Option<&'r str>,
    principal_id: Option<&'r str>,
    access_key_id: Option<&'r str>,
    error_code: Option<&'r str>,
    error_message: Option<&'r str>,
    event_id: Option<&'r str>,
    event_type: Option<&'r str>,
    recipient_account: Option<&'r str>,
    read_only: Option<bool>,
    request_parameters: Option<&'r Json>,
    response_elements: Option<&'r Json>,
    resources: Option<&'r Json>,
}

impl<'r> Parts<'r> {
    fn of_value(record: &'r Json) -> Parts<'r> {
        let null = &Json::Null;
        let identity = record.get("userIdentity").unwrap_or(null);
        let issuer_arn =
            || identity.get("sessionContext").and_then(|s| s.get("sessionIssuer")).and_then(|i| text(i, "arn"));
        Parts {
            event_time: text(record, "eventTime"),
            event_source: text(record, "eventSource"),
            event_name: text(record, "eventName"),
            aws_region: text(record, "awsRegion"),
            source_ip: text(record, "sourceIPAddress"),
            user_agent: text(record, "userAgent"),
            identity_type: text(identity, "type"),
            principal_arn: text(identity, "arn").or_else(|| text(identity, "invokedBy")).or_else(issuer_arn),
            identity_arn: text(identity, "arn"),
            identity_account: text(identity, "accountId"),
            principal_id: text(identity, "principalId"),
            access_key_id: text(identity, "accessKeyId"),
            error_code: text(record, "errorCode"),
            error_message: text(record, "errorMessage"),
            event_id: text(record, "eventID"),
            event_type: text(record, "eventType"),
            recipient_account: text(record, "recipientAccountId"),
            read_only: match record.get("readOnly") {
                Some(Json::Bool(b)) => Some(*b),
                Some(Json::String(s)) => s.parse::<bool>().ok(),
                _ => None,
            },
            request_parameters: record.get("requestParameters"),
            response_elements: record.get("responseElements"),
            resources: record.get("resources"),
        }
    }

    /// The event time, source and name every row needs, or why the record is not one.
    fn required(&self) -> Result<(i64, &'r str, &'r str), Rejected> {
        let Some(event_time) = self.event_time else {
            return Err(Rejected { reason: "cloudtrail_missing_field", detail: "record without eventTime".into() });
        };
        let Some(time) = timestamp::parse(event_time) else {
            return Err(Rejected {
                reason: "cloudtrail_bad_time",
                detail: format!("eventTime {event_time:?} is not a timestamp"),
            });
        };
        let (Some(event_source), Some(event_name)) = (self.event_source, self.event_name) else {
            return Err(Rejected {
                reason: "cloudtrail_missing_field",
                detail: "record without eventSource or eventName".into(),
            });
        };
        Ok((time, event_source, event_name))
    }

    fn push(&self, builder: &mut TableBuilder, source: &str, position: &str) -> Result<(), Rejected> {
        self.push_required(self.required()?, builder, source, position);
        Ok(())
    }

    /// `push` of a record whose `required` fields were read already.
    fn push_required(
        &self,
        (event_time, event_source, event_name): (i64, &str, &str),
        builder: &mut TableBuilder,
        source: &str,
        position: &str,
    ) {
        let session = session_of(self.identity_arn, self.identity_type, self.principal_id);
        let request_parameters = json_text(self.request_parameters);
        let response_elements = json_text(self.response_elements);
        let resources = json_text(self.resources);
        CloudtrailRow::<Borrowed> {
            event_time,
            event_source: Some(event_source),
            event_name: Some(event_name),
            aws_region: self.aws_region,
            source_ip: self.source_ip,
            user_agent: self.user_agent.map(|ua| bounded(ua, 1024)),
            principal_arn: self.principal_arn,
            principal_type: self.identity_type,
            access_key_id: self.access_key_id,
            session_name: session.as_deref(),
            account: self.identity_account.or(self.recipient_account),
            error_code: self.error_code,
            error_message: self.error_message.map(|m| bounded(m, 4096)),
            request_parameters: request_parameters.as_deref(),
            response_elements: response_elements.as_deref(),
            resources: resources.as_deref(),
            read_only: self.read_only,
            event_id: self.event_id,
            event_type: self.event_type,
            recipient_account: self.recipient_account,
            ingest_source: Some(source),
            ingest_position: Some(position),
        }
        .push_to(builder);
    }
}

/// Appends one record as a `cloudtrail` row.
pub fn push_record(builder: &mut TableBuilder, record: &Json, source: &str, position: &str) -> Result<(), Rejected> {
    Parts::of_value(record).push(builder, source, position)
}

/// Whether `body` (its leading white space gone) may be a trail file, `{"Records": [...]}`, for
/// `read_trail_file`.
pub fn sniffs_trail_file(body: &[u8]) -> bool {
    body.strip_prefix(b"{").is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"Records\""))
}

/// A trail file as CloudTrail writes it, `{"Records": [...]}`, read without a `Json` tree (the tree of a
/// file of 2,000 records was most of an ingest's time: an allocation per key and value, and a map
/// lookup per field). Pushes one row per record and returns how many, when the file is exactly that:
/// `Records` its only key, every record an object with the fields a row needs (strings, a time that
/// parses), none of them a Kinesis record. Otherwise, or on anything serde's tree would read
/// differently (a repeated key, where the tree keeps the last), it pushes nothing and returns `None`,
/// and the caller reads the document as a `Json` tree as before, which gives the same rows and the
/// dead letters of the records that are not rows. One difference, on purpose: a value in a field no row
/// keeps is skipped, not read, so a file whose only damage is there (bytes that are not UTF-8, a lone
/// surrogate escape, a number past `f64`) gives its rows, where the tree refused the whole file as a
/// dead letter.
pub fn read_trail_file(builder: &mut TableBuilder, body: &[u8], source: &str, position: &str) -> Option<usize> {
    let file: trail::File<'_> = serde_json::from_slice(body).ok()?;
    if file.records.is_empty() || file.records.iter().any(|r| r.kinesis.0) {
        return None;
    }
    let parts: Vec<Parts<'_>> = file.records.iter().map(trail::Record::parts).collect();
    let required: Vec<_> = parts.iter().map(Parts::required).collect::<Result<_, _>>().ok()?;
    let mut at = String::new();
    for (idx, (record, required)) in parts.iter().zip(required).enumerate() {
        use std::fmt::Write;
        at.clear();
        let _ = write!(at, "{position}#{idx}");
        record.push_required(required, builder, source, &at);
    }
    Some(parts.len())
}

/// The typed, borrowing form of a trail file, in `lenient` field types.
mod trail {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
    use serde_json::Value as Json;

    use super::Parts;
    use crate::lenient::{other_values_are_default, skip_map, Present, Slot, Text};

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct File<'a> {
        #[serde(rename = "Records", borrow)]
        pub records: Vec<Record<'a>>,
    }

    #[derive(serde::Deserialize)]
    pub(super) struct Record<'a> {
        #[serde(rename = "eventTime", default, borrow)]
        event_time: Text<'a>,
        #[serde(rename = "eventSource", default, borrow)]
        event_source: Text<'a>,
        #[serde(rename = "eventName", default, borrow)]
        event_name: Text<'a>,
        #[serde(rename = "awsRegion", default, borrow)]
        aws_region: Text<'a>,
        #[serde(rename = "sourceIPAddress", default, borrow)]
        source_ip: Text<'a>,
        #[serde(rename = "userAgent", default, borrow)]
        user_agent: Text<'a>,
        #[serde(rename = "userIdentity", default, borrow)]
        identity: Slot<Identity<'a>>,
        #[serde(rename = "errorCode", default, borrow)]
        error_code: Text<'a>,
        #[serde(rename = "errorMessage", default, borrow)]
        error_message: Text<'a>,
        #[serde(rename = "eventID", default, borrow)]
        event_id: Text<'a>,
        #[serde(rename = "eventType", default, borrow)]
        event_type: Text<'a>,
        #[serde(rename = "recipientAccountId", default, borrow)]
        recipient_account: Text<'a>,
        #[serde(rename = "readOnly", default)]
        read_only: ReadOnly,
        #[serde(rename = "requestParameters", default)]
        request_parameters: Option<Json>,
        #[serde(rename = "responseElements", default)]
        response_elements: Option<Json>,
        #[serde(default)]
        resources: Option<Json>,
        #[serde(default)]
        pub kinesis: Present,
    }

    #[derive(serde::Deserialize, Default)]
    struct Identity<'a> {
        #[serde(rename = "type", default, borrow)]
        kind: Text<'a>,
        #[serde(default, borrow)]
        arn: Text<'a>,
        #[serde(rename = "invokedBy", default, borrow)]
        invoked_by: Text<'a>,
        #[serde(rename = "accountId", default, borrow)]
        account_id: Text<'a>,
        #[serde(rename = "principalId", default, borrow)]
        principal_id: Text<'a>,
        #[serde(rename = "accessKeyId", default, borrow)]
        access_key_id: Text<'a>,
        #[serde(rename = "sessionContext", default, borrow)]
        session_context: Slot<SessionContext<'a>>,
    }

    #[derive(serde::Deserialize, Default)]
    struct SessionContext<'a> {
        #[serde(rename = "sessionIssuer", default, borrow)]
        session_issuer: Slot<Issuer<'a>>,
    }

    #[derive(serde::Deserialize, Default)]
    struct Issuer<'a> {
        #[serde(default, borrow)]
        arn: Text<'a>,
    }

    impl<'a> Record<'a> {
        pub(super) fn parts(&self) -> Parts<'_> {
            let identity = self.identity.value.as_ref();
            let field = |f: for<'i> fn(&'i Identity<'a>) -> &'i Text<'a>| identity.and_then(|i| f(i).get());
            let issuer_arn = identity
                .and_then(|i| i.session_context.value.as_ref())
                .and_then(|c| c.session_issuer.value.as_ref())
                .and_then(|i| i.arn.get());
            Parts {
                event_time: self.event_time.get(),
                event_source: self.event_source.get(),
                event_name: self.event_name.get(),
                aws_region: self.aws_region.get(),
                source_ip: self.source_ip.get(),
                user_agent: self.user_agent.get(),
                identity_type: field(|i| &i.kind),
                principal_arn: field(|i| &i.arn).or_else(|| field(|i| &i.invoked_by)).or(issuer_arn),
                identity_arn: field(|i| &i.arn),
                identity_account: field(|i| &i.account_id),
                principal_id: field(|i| &i.principal_id),
                access_key_id: field(|i| &i.access_key_id),
                error_code: self.error_code.get(),
                error_message: self.error_message.get(),
                event_id: self.event_id.get(),
                event_type: self.event_type.get(),
                recipient_account: self.recipient_account.get(),
                read_only: self.read_only.0,
                request_parameters: self.request_parameters.as_ref(),
                response_elements: self.response_elements.as_ref(),
                resources: self.resources.as_ref(),
            }
        }
    }

    /// `readOnly`: a boolean, or a string that is `true` or `false`.
    #[derive(Default)]
    pub(super) struct ReadOnly(Option<bool>);

    impl<'de> Deserialize<'de> for ReadOnly {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ReadOnlyVisitor;
            impl<'de> Visitor<'de> for ReadOnlyVisitor {
                type Value = ReadOnly;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<ReadOnly, E> {
                    Ok(ReadOnly(Some(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<ReadOnly, E> {
                    Ok(ReadOnly(v.parse::<bool>().ok()))
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ReadOnly, A::Error> {
                    skip_map(map)?;
                    Ok(ReadOnly(None))
                }
                other_values_are_default!();
            }
            deserializer.deserialize_any(ReadOnlyVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;
    use proptest::prelude::*;
    use store::Table;

    /// What the `Json` tree gives: the rows of the records that are rows, and whether every one was.
    fn tree_read(body: &str) -> (Option<RecordBatch>, bool) {
        let json: Json = serde_json::from_str(body).unwrap();
        let mut builder = TableBuilder::new(Table::Cloudtrail);
        let mut all = true;
        for (idx, record) in records(&json).into_iter().enumerate() {
            all &= push_record(&mut builder, record, "src", &format!("u#{idx}")).is_ok();
        }
        (builder.finish(), all)
    }

    fn typed_read(body: &str) -> Option<(usize, Option<RecordBatch>)> {
        let mut builder = TableBuilder::new(Table::Cloudtrail);
        let records = read_trail_file(&mut builder, body.as_bytes(), "src", "u")?;
        Some((records, builder.finish()))
    }

    fn data(dir: &str) -> Vec<std::path::PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    }

    #[test]
    fn real_trail_files_are_read_without_a_tree_to_the_rows_the_tree_gives() {
        let mut files = 0;
        for path in data("stratus-detonation-logs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let Ok(Json::Array(events)) = serde_json::from_str::<Json>(&text) else { continue };
            // The detonations' events as the trail writes them to S3.
            let body = serde_json::to_string(&serde_json::json!({ "Records": events })).unwrap();
            let (tree, all) = tree_read(&body);
            assert!(all, "{}: every record is a row", path.display());
            let (records, typed) =
                typed_read(&body).unwrap_or_else(|| panic!("{}: read without a tree", path.display()));
            assert_eq!(records, events.len());
            assert_eq!(typed, tree, "{}", path.display());
            files += 1;
        }
        assert!(files >= 30, "{files} files");
    }

    #[test]
    fn what_is_not_plainly_a_trail_file_is_left_to_the_tree() {
        let record = r#"{"eventTime":"2024-07-31T13:06:24Z","eventSource":"s3.amazonaws.com","eventName":"GetObject"}"#;
        assert!(typed_read(&format!(r#"{{"Records":[{record}]}}"#)).is_some());
        for body in [
            r#"{"Records":[]}"#.to_string(),
            format!(r#"{{"Records":[{record}],"nextToken":"x"}}"#),
            format!(r#"{{"Records":[{record}],"Records":[{record}]}}"#),
            format!(r#"{{"Records":[{record},1]}}"#),
            r#"{"Records":[{"eventTime":"not a time","eventSource":"s","eventName":"n"}]}"#.to_string(),
            r#"{"Records":[{"eventTime":"2024-07-31T13:06:24Z","eventSource":"s","eventName":7}]}"#.to_string(),
            r#"{"Records":[{"eventTime":"2024-07-31T13:06:24Z","eventSource":"s","eventName":"n","eventName":"m"}]}"#
                .to_string(),
            r#"{"Records":[{"eventTime":"2024-07-31T13:06:24Z","eventSource":"s","eventName":"n","kinesis":{"data":"eA=="}}]}"#
                .to_string(),
            r#"{"Records":{"eventTime":"2024-07-31T13:06:24Z"}}"#.to_string(),
        ] {
            assert!(typed_read(&body).is_none(), "{body}");
        }
        // Damage in a field no row keeps does not cost the file's rows, as it did through the tree.
        let mut damaged = br#"{"Records":[{"eventVersion":"1.0\ud800","tlsDetails":1e999,"x":"#.to_vec();
        damaged.extend_from_slice(b"\"\xff\xfe\",");
        damaged.extend_from_slice(&record.as_bytes()[1..]);
        damaged.extend_from_slice(b"]}");
        assert!(serde_json::from_slice::<Json>(&damaged).is_err());
        let mut builder = TableBuilder::new(Table::Cloudtrail);
        assert_eq!(read_trail_file(&mut builder, &damaged, "src", "u"), Some(1));
        assert!(!sniffs_trail_file(b"[{\"Records\":1}]"));
        assert!(sniffs_trail_file(b"{ \n \"Records\": []}"));
    }

    /// A JSON value of any kind, as raw text: what lookups in a tree skip must be skipped alike.
    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("-1.5e3".to_string()),
            Just("[1,{\"a\":[]},\"x\"]".to_string()),
            Just("{\"arn\":{\"x\":1},\"type\":[\"AssumedRole\"]}".to_string()),
            "[a-zA-Z0-9:/_ -]{0,12}".prop_map(|s| format!("\"{s}\"")),
            Just("\"esc\\\"aped\\u00e9\\n\"".to_string()),
            Just("\"AssumedRole\"".to_string()),
            Just("\"arn:aws:sts::1:assumed-role/r/s\\u0031\"".to_string()),
            Just("\"AROA1:sess\"".to_string()),
            Just("\"TRUE\"".to_string()),
            Just("\"false\"".to_string()),
        ]
    }

    /// An object of some of `keys` (a key may come twice) and a key nobody reads, as raw text.
    fn object_of(keys: &'static [&'static str], value: BoxedStrategy<String>) -> BoxedStrategy<String> {
        proptest::collection::vec((proptest::sample::select(keys), value), 0..keys.len() + 2)
            .prop_map(|fields| {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            })
            .boxed()
    }

    fn identity() -> BoxedStrategy<String> {
        let issuer = object_of(&["arn", "type"], any_value().boxed());
        let context = object_of(&["sessionIssuer", "attributes"], prop_oneof![issuer, any_value()].boxed());
        let field = prop_oneof![3 => any_value(), 1 => context].boxed();
        object_of(
            &["type", "arn", "invokedBy", "accountId", "principalId", "accessKeyId", "sessionContext", "x"],
            field,
        )
    }

    fn record() -> impl Strategy<Value = String> {
        let required = (
            prop_oneof![4 => Just("\"2024-07-31T13:06:24Z\"".to_string()), 1 => any_value()],
            prop_oneof![4 => Just("\"iam.amazonaws.com\"".to_string()), 1 => any_value()],
            prop_oneof![4 => Just("\"CreateUser\"".to_string()), 1 => any_value()],
        );
        let keys: &'static [&'static str] = &[
            "awsRegion",
            "sourceIPAddress",
            "userAgent",
            "errorCode",
            "errorMessage",
            "eventID",
            "eventType",
            "recipientAccountId",
            "readOnly",
            "requestParameters",
            "responseElements",
            "resources",
            "other",
        ];
        let optional = proptest::collection::vec((proptest::sample::select(keys), any_value()), 0..8);
        (required, optional, proptest::option::of(identity())).prop_map(|((time, source, name), optional, identity)| {
            let mut fields = vec![format!("\"eventTime\":{time}"), format!("\"eventSource\":{source}")];
            fields.push(format!("\"eventName\":{name}"));
            fields.extend(optional.iter().map(|(k, v)| format!("\"{k}\":{v}")));
            fields.extend(identity.map(|i| format!("\"userIdentity\":{i}")));
            format!("{{{}}}", fields.join(","))
        })
    }

    proptest! {
        #[test]
        fn a_trail_file_read_without_a_tree_gives_the_tree_s_rows_or_is_left_to_it(
            records in proptest::collection::vec(record(), 1..6)
        ) {
            let body = format!("{{\"Records\":[{}]}}", records.join(","));
            let (tree, all) = tree_read(&body);
            match typed_read(&body) {
                Some((count, typed)) => {
                    prop_assert!(all);
                    prop_assert_eq!(count, records.len());
                    prop_assert_eq!(typed, tree);
                }
                // Left to the tree: only for a record that is no row or a key given twice.
                None => prop_assert!(!all || records.iter().any(|r| crate::lenient::repeats_a_key(r)), "{}", body),
            }
        }
    }
}
