//! CloudWatch Logs subscription payloads read by a scanner of their one shape, not through serde: the
//! hot path of every deployment that receives payloads (Kafka, HTTP, Firehose files). A message with
//! escapes (every text-format application line has tabs) is unescaped into one buffer reused from
//! payload to payload, not into a `String` of its own, and the events' list is reused too.
//!
//! The scanner accepts exactly what `serde_json::from_slice::<cloudwatch::Subscription>` reads, and
//! reads it to the same values. Wherever serde's answer would take more than this scanner knows (an
//! escaped or repeated key, an array where an object was expected, a number that is not a plain
//! integer, a lone surrogate, nesting past `DEPTH_MAX`), it gives up and the caller reads the payload
//! with serde as before, which then also reports what is wrong with it.

use std::borrow::Cow;

/// Nesting of unknown values skipped before giving up (serde's own limit is 128).
const DEPTH_MAX: usize = 64;

/// A payload's fields other than its events.
#[derive(Debug, PartialEq)]
pub struct Head<'a> {
    pub message_type: &'a str,
    pub owner: Option<&'a str>,
    pub log_group: Option<Cow<'a, str>>,
    pub log_stream: Option<Cow<'a, str>>,
}

/// Where a string's text is: a range of the payload, or, when it had escapes, of the buffer it was
/// unescaped into (`Scratch::unescaped` for messages).
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
    unescaped: bool,
}

/// Bytes of unescaped text a `Scratch` keeps between payloads; the buffer of a larger payload (a unit
/// may decompress to 1 GiB) is let go once it is read.
pub const SCRATCH_BYTES_KEPT: usize = 4 * 1024 * 1024;

/// The events of the payload scanned last, kept between payloads so that their buffers are reused.
#[derive(Default)]
pub struct Scratch {
    events: Vec<(i64, Span)>,
    unescaped: String,
}

impl Scratch {
    /// Lets go of buffers grown past what a payload CloudWatch sends needs (`SCRATCH_BYTES_KEPT`).
    pub fn trim(&mut self) {
        if self.unescaped.capacity() > SCRATCH_BYTES_KEPT {
            self.unescaped = String::new();
        }
        if self.events.capacity() * std::mem::size_of::<(i64, Span)>() > SCRATCH_BYTES_KEPT {
            self.events = Vec::new();
        }
    }

    /// Bytes held by the buffers.
    pub fn capacity_bytes(&self) -> usize {
        self.unescaped.capacity() + self.events.capacity() * std::mem::size_of::<(i64, Span)>()
    }

    /// Each event's timestamp (milliseconds) and message, in order. `body` is the payload scanned.
    pub fn events<'s>(&'s self, body: &'s str) -> impl Iterator<Item = (i64, &'s str)> + 's {
        self.events.iter().map(move |(ts, span)| {
            let text = if span.unescaped { &self.unescaped } else { body };
            (*ts, &text[span.start..span.end])
        })
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Reads a subscription payload; its events go to `scratch`. `None`: read it with serde.
pub fn subscription<'a>(body: &'a str, scratch: &mut Scratch) -> Option<Head<'a>> {
    scratch.events.clear();
    scratch.unescaped.clear();
    let mut scanner = Scanner { body, bytes: body.as_bytes(), at: 0 };
    let head = scanner.payload(scratch)?;
    scanner.blank();
    (scanner.at == body.len()).then_some(head)
}

struct Scanner<'a> {
    body: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn blank(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips blanks, then takes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        self.blank();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            return true;
        }
        false
    }

    fn peek(&mut self) -> Option<u8> {
        self.blank();
        self.bytes.get(self.at).copied()
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// `null` if it is next.
    fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal(b"null").is_some()
    }

    /// The members of an object, each key handed to `member` with the scanner at its value. Gives up on
    /// an escaped key.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.borrowed_string()?;
            if !self.eat(b':') {
                return None;
            }
            member(self, key)?;
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}').then_some(());
        }
    }

    /// A string without escapes, borrowed from the payload.
    fn borrowed_string(&mut self) -> Option<&'a str> {
        let span = self.string(None)?;
        (!span.unescaped).then(|| &self.body[span.start..span.end])
    }

    /// A string, its escapes resolved into a `Cow`.
    fn cow_string(&mut self) -> Option<Cow<'a, str>> {
        let mut own = String::new();
        let span = self.string(Some(&mut own))?;
        Some(if span.unescaped { Cow::Owned(own) } else { Cow::Borrowed(&self.body[span.start..span.end]) })
    }

    /// The string starting at the cursor (its opening quote). With escapes, its text is appended to
    /// `out` (checked and dropped without one).
    fn string(&mut self, mut out: Option<&mut String>) -> Option<Span> {
        debug_assert_eq!(self.bytes.get(self.at), Some(&b'"'));
        self.at += 1;
        let start = self.at;
        let out_start = out.as_ref().map_or(0, |o| o.len());
        let mut escaped = false;
        loop {
            let run = memchr::memchr2(b'"', b'\\', &self.bytes[self.at..])?;
            let end = self.at + run;
            // JSON strings hold no control characters unescaped; serde refuses them.
            if self.bytes[self.at..end].iter().fold(false, |any, b| any | (*b < 0x20)) {
                return None;
            }
            if escaped {
                if let Some(out) = out.as_deref_mut() {
                    out.push_str(&self.body[self.at..end]);
                }
            }
            self.at = end + 1;
            if self.bytes[end] == b'"' {
                return Some(if escaped {
                    Span { start: out_start, end: out.map_or(0, |o| o.len()), unescaped: true }
                } else {
                    Span { start, end, unescaped: false }
                });
            }
            if !escaped {
                escaped = true;
                if let Some(out) = out.as_deref_mut() {
                    out.push_str(&self.body[start..end]);
                }
            }
            let unescaped = self.escape()?;
            if let Some(out) = out.as_deref_mut() {
                out.push(unescaped);
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self) -> Option<char> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.at..].starts_with(b"\\u") {
                            return None;
                        }
                        self.at += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(unit)?,
                }
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let mut value = 0;
        for digit in digits {
            value = value * 16 + (*digit as char).to_digit(16)?;
        }
        self.at += 4;
        Some(value)
    }

    /// An integer that fits `i64`, written as JSON writes integers; `None` for anything else, a
    /// fraction or exponent included (serde refuses those for an `i64` too).
    fn integer(&mut self) -> Option<i64> {
        self.blank();
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(digit) = self.bytes.get(self.at).filter(|b| b.is_ascii_digit()) {
            let digit = i64::from(digit - b'0');
            value = value.checked_mul(10)?;
            value = if negative { value.checked_sub(digit)? } else { value.checked_add(digit)? };
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        if matches!(self.bytes.get(self.at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(value)
    }

    /// Skips any JSON value.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        match self.peek()? {
            b'"' => self.string(None).map(drop),
            b'{' => self.object(|this, _| this.skip(depth + 1)),
            b'[' => {
                self.at += 1;
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if self.eat(b',') {
                        continue;
                    }
                    return self.eat(b']').then_some(());
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// Skips a number of JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |this: &mut Self| {
            let start = this.at;
            while this.bytes.get(this.at).is_some_and(u8::is_ascii_digit) {
                this.at += 1;
            }
            this.at - start
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let first = *self.bytes.get(self.at)?;
        match digits(self) {
            0 => return None,
            n if n > 1 && first == b'0' => return None,
            _ => {}
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        Some(())
    }

    /// An optional field: `null` or what `read` reads.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            return Some(None);
        }
        (self.peek()? == b'"').then_some(())?;
        read(self).map(Some)
    }

    fn payload(&mut self, scratch: &mut Scratch) -> Option<Head<'a>> {
        let mut message_type = None;
        let (mut owner, mut log_group, mut log_stream, mut events) = (None, None, None, false);
        self.object(|this, key| {
            // A key seen twice is serde's error to report.
            let first = |seen: bool| (!seen).then_some(());
            match key {
                "messageType" => {
                    first(message_type.is_some())?;
                    (this.peek()? == b'"').then_some(())?;
                    message_type = Some(this.borrowed_string()?);
                }
                "owner" => {
                    first(owner.is_some())?;
                    owner = Some(this.optional(Self::borrowed_string)?);
                }
                "logGroup" => {
                    first(log_group.is_some())?;
                    log_group = Some(this.optional(Self::cow_string)?);
                }
                "logStream" => {
                    first(log_stream.is_some())?;
                    log_stream = Some(this.optional(Self::cow_string)?);
                }
                "logEvents" => {
                    first(events)?;
                    events = true;
                    this.events(scratch)?;
                }
                // A CloudWatch Logs Lambda trigger event, whose payload is inside: the caller's to read.
                "awslogs" => return None,
                _ => this.skip(1)?,
            }
            Some(())
        })?;
        Some(Head {
            message_type: message_type?,
            owner: owner.flatten(),
            log_group: log_group.flatten(),
            log_stream: log_stream.flatten(),
        })
    }

    fn events(&mut self, scratch: &mut Scratch) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            let (mut id, mut timestamp, mut message) = (false, None, None);
            self.object(|this, key| {
                match key {
                    "id" => {
                        (!id).then_some(())?;
                        id = true;
                        this.optional(|this| this.string(None))?;
                    }
                    "timestamp" => {
                        timestamp.is_none().then_some(())?;
                        timestamp = Some(this.integer()?);
                    }
                    "message" => {
                        message.is_none().then_some(())?;
                        (this.peek()? == b'"').then_some(())?;
                        message = Some(this.string(Some(&mut scratch.unescaped))?);
                    }
                    _ => this.skip(2)?,
                }
                Some(())
            })?;
            scratch.events.push((timestamp?, message?));
            if self.eat(b',') {
                continue;
            }
            return self.eat(b']').then_some(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudwatch::Subscription;
    use proptest::prelude::*;

    /// What serde reads, in the scanner's terms.
    fn serde_read(body: &str) -> Option<(Head<'_>, Vec<(i64, String)>)> {
        let subscription = serde_json::from_str::<Subscription<'_>>(body).ok()?;
        let events = subscription.log_events.iter().map(|e| (e.timestamp, e.message.to_string())).collect();
        let head = Head {
            message_type: subscription.message_type,
            owner: subscription.owner,
            log_group: subscription.log_group,
            log_stream: subscription.log_stream,
        };
        Some((head, events))
    }

    fn scan_read<'a>(body: &'a str, scratch: &mut Scratch) -> Option<(Head<'a>, Vec<(i64, String)>)> {
        let head = subscription(body, scratch)?;
        Some((head, scratch.events(body).map(|(ts, m)| (ts, m.to_string())).collect()))
    }

    #[test]
    fn a_cloudwatch_payload_is_read_as_serde_reads_it_with_its_escapes_resolved() {
        let body = r#"{"messageType":"DATA_MESSAGE","owner":"111122223333","logGroup":"/aws/lambda/orders",
            "logStream":"2024/03/05/[$LATEST]0123","subscriptionFilters":["coldtrail"],"logEvents":[
            {"id":"3781","timestamp":1709632800000,"message":"START RequestId: 8f50 Version: $LATEST\n"},
            {"id":"3782","timestamp":1709632800001,"message":"2024-03-05T10:00:00.000Z\t8f50\tINFO\tsaid \"hi\" \u00e9\ud83d\ude00 \/ \\"},
            {"timestamp":-5,"message":"","extra":{"a":[1,2.5e-3,true,false,null,"x"]},"id":null}]}"#;
        let mut scratch = Scratch::default();
        let read = scan_read(body, &mut scratch).expect("the fast path reads a CloudWatch payload");
        assert_eq!(read, serde_read(body).unwrap());
        assert_eq!(read.1[1].1, "2024-03-05T10:00:00.000Z\t8f50\tINFO\tsaid \"hi\" é😀 / \\");
        assert!(matches!(read.0.log_group, Some(Cow::Borrowed(_))), "text without escapes is borrowed");
        // The buffers are reused: a second payload's events are its own only.
        let second = r#"{"messageType":"CONTROL_MESSAGE","logEvents":[]}"#;
        assert_eq!(scan_read(second, &mut scratch).unwrap(), serde_read(second).unwrap());
        assert!(scratch.is_empty());
    }

    #[test]
    fn a_large_payload_s_buffers_are_let_go_once_it_is_read() {
        let message = "a\\tb".repeat(2 << 20);
        let body = format!(r#"{{"messageType":"DATA_MESSAGE","logEvents":[{{"timestamp":1,"message":"{message}"}}]}}"#);
        let mut scratch = Scratch::default();
        let (_, events) = scan_read(&body, &mut scratch).unwrap();
        assert_eq!(events[0].1.len(), 6 << 20);
        assert!(scratch.capacity_bytes() > SCRATCH_BYTES_KEPT);
        scratch.trim();
        assert!(scratch.capacity_bytes() <= SCRATCH_BYTES_KEPT, "{}", scratch.capacity_bytes());
        // A small payload's buffers are kept for the next.
        let small = r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1,"message":"a\tb"}]}"#;
        scan_read(small, &mut scratch).unwrap();
        let kept = scratch.capacity_bytes();
        scratch.trim();
        assert_eq!(scratch.capacity_bytes(), kept);
        assert!(kept > 0);
    }

    #[test]
    fn what_the_scanner_is_not_sure_of_is_left_to_serde() {
        let cases = [
            // Serde errs on these.
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1.5,"message":"x"}]}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":01,"message":"x"}]}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":9223372036854775808,"message":"x"}]}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1}]}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1,"message":"\ud800"}]}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1,"message":"a	tab"}]}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1,"message":"x","id":5}]}"#,
            r#"{"messageType":"DATA_MESSAGE","logGroup":"a","logGroup":"b"}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":null}"#,
            r#"{"messageType":"DATA_\u004dESSAGE"}"#,
            r#"{"owner":"1"}"#,
            r#"{"messageType":"DATA_MESSAGE"} x"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1,"message":"x"},]}"#,
            r#"{"messageType":"DATA_MESSAGE","x":[1,]}"#,
            r#"{"messageType":"DATA_MESSAGE","x":-}"#,
            r#"{"messageType":"DATA_MESSAGE","x":1.}"#,
            r#"{"messageType":"DATA_MESSAGE","logEvents":[{"timestamp":1,"message":"x"}"#,
            // Serde reads these, by ways the scanner leaves to it.
            r#"{"messageType":"DATA_MESSAGE","logEvents":[[null,1,"x"]]}"#,
            r#"["DATA_MESSAGE",null,null,null,[]]"#,
            r#"{"message\u0054ype":"DATA_MESSAGE"}"#,
        ];
        for body in cases {
            let mut scratch = Scratch::default();
            assert_eq!(scan_read(body, &mut scratch), None, "{body}");
        }
        // A nesting past the scanner's depth in a field it skips.
        let deep = format!(r#"{{"messageType":"DATA_MESSAGE","x":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(serde_read(&deep).is_some());
        assert_eq!(scan_read(&deep, &mut Scratch::default()), None);
    }

    /// JSON text of a value: a payload's field or event drawn from the shapes that trip readers up.
    fn text_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
            "[ -~\t\u{e9}\u{1f600}\u{1}]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            prop::sample::select(vec![
                r#""\ud83d\ude00""#,
                r#""\ud83d""#,
                r#""\u00""#,
                r#""a\qb""#,
                "\"raw\ttab\"",
                "-0",
                "01",
                "1e",
                "[1,[2,{}]]",
                "{\"k\":[]}",
            ])
            .prop_map(str::to_string),
        ]
    }

    fn member(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
        (prop::sample::select(keys), text_value(), "[ \n]{0,2}")
            .prop_map(|(key, value, blank)| format!("{blank}\"{key}\"{blank}:{blank}{value}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_scanner_reads_what_serde_reads_or_leaves_it_to_serde(
            head in prop::collection::vec(member(&["messageType", "owner", "logGroup", "logStream", "other"]), 0..6),
            events in prop::collection::vec(prop::collection::vec(member(&["id", "timestamp", "message", "x"]), 0..5), 0..4),
            valid in any::<bool>(),
        ) {
            let mut members = head;
            if valid {
                members.insert(0, r#""messageType":"DATA_MESSAGE""#.to_string());
            }
            let events: Vec<String> = events.iter().map(|e| format!("{{{}}}", e.join(","))).collect();
            members.push(format!("\"logEvents\":[{}]", events.join(",")));
            let body = format!("{{{}}}", members.join(","));
            let mut scratch = Scratch::default();
            if let Some(read) = scan_read(&body, &mut scratch) {
                prop_assert_eq!(Some(read), serde_read(&body), "{}", body);
            }
        }

        #[test]
        fn well_formed_payloads_take_the_fast_path(
            messages in prop::collection::vec("[ -~\t\n\u{e9}\u{1f600}]{0,40}", 0..20),
            timestamps in prop::collection::vec(any::<i64>(), 20),
        ) {
            let events: Vec<_> = messages.iter().zip(&timestamps)
                .map(|(m, ts)| serde_json::json!({"id": "1", "timestamp": ts, "message": m}))
                .collect();
            let body = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "/aws/lambda/f\tx",
                "logStream": "s", "subscriptionFilters": ["a"], "logEvents": events}).to_string();
            let mut scratch = Scratch::default();
            let read = scan_read(&body, &mut scratch);
            prop_assert!(read.is_some(), "{}", body);
            prop_assert_eq!(read, serde_read(&body));
        }
    }
}
