//! A JSON document too large to hold is read in pieces: each piece is the document with its one large
//! array cut down to a run of its elements, so that every piece has the document's shape (its envelope:
//! the keys around the array, the objects the array is nested in) and is read as the document would be.
//!
//! `outline` finds the array from a first pass over the bytes, holding none of them but the document's
//! last `around_max` bytes: the innermost array such that the bytes before and after it together are at
//! most `around_max` (a CloudTrail file's `Records`, a `filter-log-events` page's `events`, a top-level
//! array, an OTLP request's one resource's spans). `Elements` then finds the commas between its elements
//! in a second pass, so that a piece ends after a whole element.
//!
//! Neither pass checks that the document is valid JSON beyond its brackets and strings: each piece is
//! parsed as a document of its own, and a broken element makes its piece a dead letter, not the others.

use std::io::Read;

/// Where the array of a document's pieces lies, and what ends every piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outline {
    /// The offset just past the array's `[`: every piece starts with the document's bytes before it.
    pub open: u64,
    /// The offset of the array's `]`.
    pub close: u64,
    /// The document's bytes from `close` to its end: every piece ends with them.
    pub suffix: Vec<u8>,
}

/// Deepest nesting the outline follows; a document nested deeper is read whole.
const DEPTH_MAX: usize = 512;

/// Bytes read from the input at a time.
const READ_BYTES: usize = 1 << 20;

/// The outline of the one JSON document `reader` holds, or `None` when it is not one document (nothing,
/// a scalar, documents back to back, unbalanced brackets, an unterminated string) or no array of it
/// leaves at most `around_max` bytes around it.
pub fn outline(mut reader: impl Read, around_max: usize) -> std::io::Result<Option<Outline>> {
    let mut chunk = vec![0u8; READ_BYTES];
    // Open brackets: whether each is an array, and the offset just past it.
    let mut open: Vec<(bool, u64)> = Vec::new();
    // Arrays that may hold most of the document: (offset past `[`, offset of `]`).
    let mut candidates: Vec<(u64, u64)> = Vec::new();
    // The last bytes read, from `tail_at` on: the suffix is among them.
    let (mut tail, mut tail_at) = (Vec::<u8>::new(), 0u64);
    let mut string = JsonString::default();
    let (mut started, mut ended) = (false, false);
    let mut at = 0u64;
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let bytes = &chunk[..read];
        let mut i = 0;
        while i < bytes.len() {
            if string.open {
                i = string.skip(bytes, i);
                continue;
            }
            let byte = bytes[i];
            let offset = at + i as u64;
            i += 1;
            if byte.is_ascii_whitespace() {
                continue;
            }
            if ended || (open.is_empty() && started) {
                return Ok(None);
            }
            match byte {
                b'{' | b'[' => {
                    started = true;
                    if open.len() == DEPTH_MAX {
                        return Ok(None);
                    }
                    open.push((byte == b'[', offset + 1));
                }
                b'}' | b']' => {
                    let Some((is_array, from)) = open.pop() else { return Ok(None) };
                    if is_array != (byte == b']') {
                        return Ok(None);
                    }
                    if is_array && offset - from > around_max as u64 {
                        candidates.push((from, offset));
                    }
                    ended = open.is_empty();
                }
                b'"' if started => string.open = true,
                _ if !started => return Ok(None),
                _ => {}
            }
        }
        at += read as u64;
        tail.extend_from_slice(bytes);
        if tail.len() > 2 * around_max.max(READ_BYTES) {
            let drop = tail.len() - around_max.max(READ_BYTES);
            tail.drain(..drop);
            tail_at += drop as u64;
        }
    }
    if !ended || string.open {
        return Ok(None);
    }
    // Arrays this large are nested in one another (two side by side could not each leave at most
    // `around_max` around them); the innermost of those that do holds the smallest elements.
    let chosen = candidates
        .into_iter()
        .filter(|(from, close)| from + (at - close) <= around_max as u64)
        .min_by_key(|(from, close)| close - from);
    Ok(chosen.map(|(from, close)| Outline { open: from, close, suffix: tail[(close - tail_at) as usize..].to_vec() }))
}

/// Where a scan is inside a JSON string: whether one is open, and whether its last byte was a
/// backslash (so the next is escaped). A string may straddle two reads.
#[derive(Debug, Default)]
struct JsonString {
    open: bool,
    escaped: bool,
}

impl JsonString {
    /// Inside an open string at `bytes[i]`: the index past its closing quote (the string is then
    /// closed), or the end of `bytes` (it stays open).
    fn skip(&mut self, bytes: &[u8], mut i: usize) -> usize {
        if self.escaped {
            self.escaped = false;
            i += 1;
            if i >= bytes.len() {
                return i;
            }
        }
        while let Some(found) = memchr::memchr2(b'"', b'\\', &bytes[i..]) {
            i += found + 1;
            if bytes[i - 1] == b'"' {
                self.open = false;
                return i;
            }
            // A backslash: the byte after it is escaped, whichever it is.
            if i >= bytes.len() {
                self.escaped = true;
                return i;
            }
            i += 1;
        }
        bytes.len()
    }
}

/// The commas between the elements of an array, found as its bytes arrive: bytes are added to a buffer
/// that starts at an element (or at the array's start), and `scan` notes the last comma at the array's
/// own depth.
#[derive(Debug, Default)]
pub struct Elements {
    string: JsonString,
    depth: u32,
    /// How much of the buffer was scanned.
    scanned: usize,
    /// The buffer's last comma between two elements.
    last_comma: Option<usize>,
}

impl Elements {
    /// Scans the bytes of `buffer` added since the last call.
    pub fn scan(&mut self, buffer: &[u8]) {
        let mut i = self.scanned;
        while i < buffer.len() {
            if self.string.open {
                i = self.string.skip(buffer, i);
                continue;
            }
            match buffer[i] {
                b'"' => self.string.open = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b',' if self.depth == 0 => self.last_comma = Some(i),
                _ => {}
            }
            i += 1;
        }
        self.scanned = buffer.len();
    }

    /// The last comma between two elements in the buffer scanned.
    pub fn last_comma(&self) -> Option<usize> {
        self.last_comma
    }

    /// The buffer's first `at + 1` bytes (elements and the comma after them) were taken away.
    pub fn cut(&mut self, at: usize) {
        self.scanned -= at + 1;
        self.last_comma = None;
    }
}

/// One piece: the document's bytes before the array, `elements`, and the bytes from the array's end.
pub fn piece(prefix: &[u8], elements: &[u8], suffix: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(prefix.len() + elements.len() + suffix.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(elements);
    out.extend_from_slice(suffix);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outline_of(text: &str, around_max: usize) -> Option<(String, String, String)> {
        let outline = outline(text.as_bytes(), around_max).unwrap()?;
        let (open, close) = (outline.open as usize, outline.close as usize);
        Some((text[..open].to_string(), text[open..close].to_string(), String::from_utf8(outline.suffix).unwrap()))
    }

    /// The pieces of `text` cut after about `piece_bytes` of elements.
    fn pieces(text: &str, around_max: usize, piece_bytes: usize) -> Vec<String> {
        let outline = outline(text.as_bytes(), around_max).unwrap().unwrap();
        let prefix = &text.as_bytes()[..outline.open as usize];
        let content = &text.as_bytes()[outline.open as usize..outline.close as usize];
        let (mut elements, mut buffer, mut out, mut pieces) = (Elements::default(), Vec::new(), Vec::new(), Vec::new());
        // Bytes arrive three at a time, so that commas, strings and escapes straddle the reads.
        for bytes in content.chunks(3) {
            buffer.extend_from_slice(bytes);
            elements.scan(&buffer);
            if let Some(comma) = elements.last_comma().filter(|_| buffer.len() >= piece_bytes) {
                piece(prefix, &buffer[..comma], &outline.suffix, &mut out);
                pieces.push(String::from_utf8(out.clone()).unwrap());
                buffer.drain(..=comma);
                elements.cut(comma);
            }
        }
        piece(prefix, &buffer, &outline.suffix, &mut out);
        pieces.push(String::from_utf8(out).unwrap());
        pieces
    }

    #[test]
    fn the_array_is_the_innermost_one_that_leaves_little_around_it() {
        let spans = (0..50).map(|i| format!(r#"{{"name":"s{i}","attrs":[1,2]}}"#)).collect::<Vec<_>>().join(",");
        let otlp = format!(r#"{{"resourceSpans":[{{"resource":{{"a":1}},"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
        let (prefix, content, suffix) = outline_of(&otlp, 80).unwrap();
        assert_eq!(prefix, r#"{"resourceSpans":[{"resource":{"a":1},"scopeSpans":[{"spans":["#);
        assert_eq!(content, spans);
        assert_eq!(suffix, "]}]}]}");

        let events = (0..40).map(|i| format!(r#"{{"message":"m{i}","timestamp":{i}}}"#)).collect::<Vec<_>>().join(",");
        let page = format!(r#"{{"events":[{events}],"searchedLogStreams":[],"nextToken":"t"}}"#);
        assert_eq!(outline_of(&page, 64).unwrap().2, r#"],"searchedLogStreams":[],"nextToken":"t"}"#);
        let top = format!("  [{events}]\n");
        assert_eq!(outline_of(&top, 64).unwrap(), ("  [".into(), events.clone(), "]\n".into()));
    }

    #[test]
    fn anything_but_one_document_around_a_large_array_has_no_outline() {
        let events = (0..40).map(|i| format!(r#"{{"m":"{i}"}}"#)).collect::<Vec<_>>().join(",");
        for text in [
            String::new(),
            "   ".into(),
            r#""a string""#.into(),
            "12".into(),
            format!("[{events}]{{}}"),
            format!("[{events}]\n[{events}]"),
            format!("[{events}]x"),
            format!("[{events}"),
            format!("[{events}}}"),
            format!(r#"{{"a":"{}","b":[{events}]}}"#, "x".repeat(200)),
            format!(r#"{{"b":[{events}],"a":"{}"}}"#, "x".repeat(200)),
            format!(r#"{{"b":[{events}],"a":"unterminated}}"#),
            "[".repeat(DEPTH_MAX + 1) + &"]".repeat(DEPTH_MAX + 1),
        ] {
            assert_eq!(outline_of(&text, 64), None, "{text}");
        }
        // The array of a small document leaves little around it, but is not large: nothing to cut.
        assert_eq!(outline_of(r#"{"events":[{"m":1}]}"#, 64), None);
    }

    #[test]
    fn strings_with_brackets_commas_quotes_and_escapes_are_not_structure() {
        let tricky = [r#""a,b""#, r#""[{""#, r#""\"],""#, r#""\\""#, r#""\\\",[""#, r#"{"k":"}]"}"#, r#"[1,[2,3]]"#];
        let elements: Vec<String> = (0..30).map(|i| tricky[i % tricky.len()].to_string()).collect();
        let text = format!(r#"{{"x":"]","Records":[{}],"y":"["}}"#, elements.join(","));
        let (prefix, content, suffix) = outline_of(&text, 40).unwrap();
        assert_eq!((prefix.as_str(), suffix.as_str()), (r#"{"x":"]","Records":["#, r#"],"y":"["}"#));
        assert_eq!(content, elements.join(","));
        for piece_bytes in [1, 10, 50, 1000] {
            let mut seen = Vec::new();
            for piece in pieces(&text, 40, piece_bytes) {
                let json: serde_json::Value = serde_json::from_str(&piece).unwrap_or_else(|e| panic!("{e}: {piece}"));
                assert_eq!((json["x"].as_str(), json["y"].as_str()), (Some("]"), Some("[")));
                seen.extend(json["Records"].as_array().unwrap().iter().cloned());
            }
            let whole: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(&seen, whole["Records"].as_array().unwrap(), "pieces of {piece_bytes} bytes");
        }
    }

    #[test]
    fn every_element_is_in_exactly_one_piece_in_order_whatever_the_piece_size() {
        let elements: Vec<String> = (0..200)
            .map(|i| match i % 4 {
                0 => format!(r#"{{"n":{i},"s":"{}"}}"#, "é,[".repeat(i % 7)),
                1 => format!("[{i},{{\"a\":[{i}]}}]"),
                2 => format!("\"s{i}\\\"\""),
                _ => format!(" {i} "),
            })
            .collect();
        let text = format!("{{\"head\":1,\"items\":[\n{}\n],\"tail\":2}}", elements.join(",\n"));
        for piece_bytes in [1, 7, 64, 500, 100_000] {
            let pieces = pieces(&text, 32, piece_bytes);
            let mut seen = Vec::new();
            for piece in &pieces {
                let json: serde_json::Value = serde_json::from_str(piece).unwrap_or_else(|e| panic!("{e}: {piece}"));
                assert_eq!((json["head"].as_i64(), json["tail"].as_i64()), (Some(1), Some(2)));
                seen.extend(json["items"].as_array().unwrap().iter().cloned());
            }
            let whole: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(&seen, whole["items"].as_array().unwrap(), "pieces of {piece_bytes} bytes");
            if piece_bytes == 1 {
                assert_eq!(pieces.len(), elements.len());
            }
        }
    }
}
