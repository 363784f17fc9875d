//! Undoing the encodings attackers hide payloads behind, before matching: URL (repeated, `%u`, overlong
//! UTF-8 slashes), HTML entities, `\u`/`\x` escapes, base64 segments, letter case, SQL comments, log4j
//! lookups and `${IFS}`. Each function is total: any input gives an output, nothing panics.

use std::borrow::Cow;

use base64::Engine as _;

/// Most bytes of one text that are decoded and matched.
pub const TEXT_BYTES_MAX: usize = 64 * 1024;

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// One round of URL decoding: `%XX`, `%uXXXX` and `+`. Overlong UTF-8 encodings of `/`, `\` and `.`
/// (`%c0%af`, `%e0%80%af`, `%c1%9c`, `%c0%ae`) decode to the character they disguise.
///
/// Each decoder returns its input borrowed when the text holds none of the characters it acts on, and
/// only then: most texts are not encoded, and `forms` runs every decoder up to four times.
pub fn url_decode(text: &str) -> Cow<'_, str> {
    // Without `%` or `+` nothing decodes, and valid UTF-8 holds no overlong sequence (`0xc0`, `0xc1`
    // and `0xe0 0x80..0x9f` never occur in it).
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let unicode = matches!(bytes.get(i + 1), Some(b'u' | b'U'))
            .then(|| bytes.get(i + 2..i + 6))
            .flatten()
            .and_then(|digits| digits.iter().try_fold(0u32, |acc, b| hex_value(*b).map(|d| acc << 4 | d as u32)));
        if let Some(code) = unicode {
            let mut buffer = [0u8; 4];
            out.extend_from_slice(char::from_u32(code).unwrap_or('?').encode_utf8(&mut buffer).as_bytes());
            i += 6;
            continue;
        }
        match (bytes.get(i + 1).and_then(|b| hex_value(*b)), bytes.get(i + 2).and_then(|b| hex_value(*b))) {
            (Some(high), Some(low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            // A `%` before a letter or digit that starts no escape is dropped, as IIS and ASP do
            // (sqlmap's `percentage` tamper: `%S%E%L%E%C%T`); before anything else it is text (`<%=`).
            _ if bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphanumeric()) => {
                i += 1;
            }
            _ => {
                out.push(b'%');
                i += 1;
            }
        }
    }
    let out = replace_overlong(&out);
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Overlong UTF-8 sequences (invalid, and decoded as their ASCII by lax servers).
fn replace_overlong(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let two = bytes.get(i..i + 2);
        let three = bytes.get(i..i + 3);
        match (two, three) {
            (_, Some([0xe0, 0x80, c])) if *c >= 0x80 && *c < 0xc0 => {
                out.push(c & 0x3f);
                i += 3;
            }
            (Some([a @ (0xc0 | 0xc1), c]), _) if *c >= 0x80 && *c < 0xc0 => {
                out.push(((a & 0x01) << 6) | (c & 0x3f));
                i += 2;
            }
            // A lead byte before ASCII (`%c0%2f`) is dropped by the lax decoders it is aimed at.
            (Some([0xc0 | 0xc1, c]), _) if *c < 0x80 => {
                i += 1;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// HTML character references: numeric (`&#47;`, `&#x2f;`, without the `;` too) and the named ones that
/// spell code.
pub fn html_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    const NAMED: [(&str, char); 20] = [
        ("lt", '<'),
        ("gt", '>'),
        ("amp", '&'),
        ("quot", '"'),
        ("apos", '\''),
        ("sol", '/'),
        ("bsol", '\\'),
        ("colon", ':'),
        ("semi", ';'),
        ("lpar", '('),
        ("rpar", ')'),
        ("period", '.'),
        ("comma", ','),
        ("equals", '='),
        ("dollar", '$'),
        ("lbrace", '{'),
        ("rbrace", '}'),
        ("num", '#'),
        ("tab", '\t'),
        ("newline", '\n'),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut decoded = None;
        if let Some(number) = after.strip_prefix('#') {
            let (digits, radix) = match number.strip_prefix(['x', 'X']) {
                Some(hex) => (hex, 16),
                None => (number, 10),
            };
            let len = digits.chars().take_while(|c| c.is_digit(radix)).count().min(8);
            if len > 0 {
                if let Some(c) = u32::from_str_radix(&digits[..len], radix).ok().and_then(char::from_u32) {
                    let consumed = (number.len() - digits.len()) + len + 1;
                    let consumed = consumed + usize::from(after[consumed..].starts_with(';'));
                    decoded = Some((c, consumed));
                }
            }
        } else {
            let len = after.chars().take_while(|c| c.is_ascii_alphabetic()).count();
            let name = after[..len].to_ascii_lowercase();
            if let Some((_, c)) = NAMED.iter().find(|(n, _)| *n == name) {
                decoded = Some((*c, len + usize::from(after[len..].starts_with(';'))));
            }
        }
        match decoded {
            Some((c, consumed)) => {
                out.push(c);
                rest = &after[consumed..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `\uXXXX`, `\u{X}`, `\xHH`, `\NNN` (octal), `\n`, `\r` and `\t` escapes.
pub fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let hex = |from: usize, n: usize| -> Option<u32> {
        let digits: String = chars.get(from..from + n)?.iter().collect();
        u32::from_str_radix(&digits, 16).ok()
    };
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            match chars[i + 1] {
                'u' | 'U' if chars.get(i + 2) == Some(&'{') => {
                    let end = chars[i + 3..].iter().position(|c| *c == '}').map(|p| i + 3 + p);
                    if let Some(c) = end.and_then(|e| hex(i + 3, e - i - 3)).and_then(char::from_u32) {
                        out.push(c);
                        i = end.expect("found") + 1;
                        continue;
                    }
                }
                'u' | 'U' => {
                    if let Some(c) = hex(i + 2, 4).and_then(char::from_u32) {
                        out.push(c);
                        i += 6;
                        continue;
                    }
                }
                'x' | 'X' => {
                    if let Some(c) = hex(i + 2, 2).and_then(char::from_u32) {
                        out.push(c);
                        i += 4;
                        continue;
                    }
                }
                // Written-out line breaks and tabs (`a;id\n`): the raw form is matched too, so a Windows
                // path (`C:\new`) still is one there.
                'n' | 'r' | 't' => {
                    out.push(match chars[i + 1] {
                        'n' => '\n',
                        'r' => '\r',
                        _ => '\t',
                    });
                    i += 2;
                    continue;
                }
                '0'..='7' => {
                    let digits: String = chars[i + 1..].iter().take(3).take_while(|c| c.is_digit(8)).collect();
                    if digits.len() == 3 {
                        if let Some(c) = u32::from_str_radix(&digits, 8).ok().and_then(char::from_u32) {
                            out.push(c);
                            i += 4;
                            continue;
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Log4j lookups that only spell text (`${lower:j}`, `${::-n}`, `${env:X:-d}`, `${upper:i}`), resolved, so
/// that `${${lower:j}ndi:...}` reads `${jndi:...}`.
pub fn resolve_lookups(text: &str) -> Cow<'_, str> {
    if !text.contains("${") {
        return Cow::Borrowed(text);
    }
    let mut current = text.to_string();
    for _ in 0..8 {
        let mut changed = false;
        let mut out = String::with_capacity(current.len());
        let mut rest = current.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let inner_start = start + 2;
            let inner_end = rest[inner_start..].find(['}', '$']).map(|p| inner_start + p);
            match inner_end {
                Some(end) if rest.as_bytes()[end] == b'}' => {
                    let inner = &rest[inner_start..end];
                    let lower = inner.to_ascii_lowercase();
                    let replacement = if let Some((_, default)) = inner.split_once(":-") {
                        Some(default.to_string())
                    } else if let Some(value) = lower.strip_prefix("lower:").or_else(|| lower.strip_prefix("upper:")) {
                        Some(value.to_string())
                    } else {
                        lower.strip_prefix("date:").map(|value| value.trim_matches('\'').to_string())
                    };
                    match replacement {
                        Some(r) => {
                            out.push_str(&r);
                            changed = true;
                        }
                        None => out.push_str(&rest[start..=end]),
                    }
                    rest = &rest[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = &rest[inner_start..];
                }
            }
        }
        out.push_str(rest);
        current = out;
        if !changed {
            break;
        }
    }
    Cow::Owned(current)
}

/// Lower case, SQL comments as spaces (versioned MySQL comments as their content), shell separators `${IFS}` as spaces, runs of white space as one space.
pub fn normalise(text: &str) -> String {
    let lower = text.to_lowercase();
    // Each rewrite only when its text is there: most strings hold none, and this runs on every form.
    let mut replaced = if lower.contains("/*") { without_comments(&lower) } else { lower };
    if replaced.contains('$') {
        replaced = replaced.replace("${ifs}", " ").replace("$ifs$9", " ").replace("$ifs", " ");
    }
    if replaced.contains('\u{0}') {
        replaced = replaced.replace('\u{0}', "");
    }
    if !replaced.is_ascii() {
        replaced = replaced.chars().map(ascii_lookalike).collect();
    }
    // `0x2e0x2e0x2f` spells `../` to decoders that take hex literals.
    let replaced = if replaced.contains("0x") && (replaced.contains("0x2f") || replaced.contains("0x5c")) {
        replaced.replace("0x2e", ".").replace("0x2f", "/").replace("0x5c", "\\")
    } else {
        replaced
    };
    // ASCII with no white space but single spaces is its own collapsed form.
    let single_spaced = replaced.is_ascii()
        && !replaced.bytes().any(|b| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        && !replaced.contains("  ");
    if single_spaced {
        return replaced;
    }
    // A run of white space is one space, or one line break if it holds one (a line break separates
    // shell commands).
    let mut out = String::with_capacity(replaced.len());
    let mut run: Option<char> = None;
    for c in replaced.chars() {
        if c.is_whitespace() || c == '\u{a0}' {
            if c == '\n' || c == '\r' {
                run = Some('\n');
            } else if run.is_none() {
                run = Some(' ');
            }
        } else {
            if let Some(space) = run.take() {
                out.push(space);
            }
            out.push(c);
        }
    }
    if let Some(space) = run {
        out.push(space);
    }
    out
}

/// SQL comments as spaces: a comment is white space to SQL; MySQL runs the content of a versioned
/// comment (`/*!50000UNION*/`).
fn without_comments(lower: &str) -> String {
    let mut without_comments = String::with_capacity(lower.len());
    let mut rest = lower;
    while let Some(start) = rest.find("/*") {
        without_comments.push_str(&rest[..start]);
        match rest[start + 2..].find("*/") {
            Some(end) => {
                let content = &rest[start + 2..start + 2 + end];
                if let Some(code) = content.strip_prefix('!') {
                    without_comments.push(' ');
                    without_comments.push_str(code.trim_start_matches(|c: char| c.is_ascii_digit()));
                }
                without_comments.push(' ');
                rest = &rest[start + 2 + end + 2..];
            }
            // An unterminated comment (`admin'/*`) comments out the rest of the query: kept as a marker.
            None => {
                without_comments.push_str(" /*");
                rest = "";
            }
        }
    }
    without_comments.push_str(rest);
    without_comments
}

/// A text with the quotes, backslashes and empty expansions that the shell removes from inside a word
/// taken out: `w'h'o'am'i`, `w"h"oami`, `wh\\oami`, `who$@ami` all run `whoami`.
pub fn shell_unquoted(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    while i < chars.len() {
        let c = chars[i];
        let before = if i > 0 { chars.get(i - 1) } else { None };
        if matches!(c, '\'' | '"' | '\\') && word(before) && word(chars.get(i + 1)) {
            i += 1;
            continue;
        }
        if c == '$' && matches!(chars.get(i + 1), Some('@' | '*')) && word(before) {
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The ASCII character a full-width form or a slash or dot look-alike stands for (`%uff0e%uff0e%u2216`
/// is `..\\` to a server that folds Unicode).
fn ascii_lookalike(c: char) -> char {
    match c {
        '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
        '\u{2215}' | '\u{2044}' | '\u{29f8}' => '/',
        '\u{2216}' | '\u{29f5}' | '\u{29f9}' | '\u{fe68}' => '\\',
        '\u{2024}' | '\u{fe52}' => '.',
        _ => c,
    }
}

/// Base64 segments of a text (at least 8 characters) that decode to printable text.
pub fn base64_segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for segment in text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_'))) {
        let segment = segment.trim_end_matches('=');
        if segment.len() < 8 || segment.len() % 4 == 1 || out.len() >= 8 {
            continue;
        }
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(segment)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment));
        let Ok(bytes) = decoded else { continue };
        let printable = bytes.iter().filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()).count();
        // Binary (images, serialized objects) stays binary; a few known binary markers are kept as text.
        let binary_marker = bytes.starts_with(&[0xac, 0xed, 0x00, 0x05])
            || bytes.starts_with(&[0x80, 0x04, 0x95])
            || bytes.starts_with(&[0x80, 0x03])
            || bytes.starts_with(&[0x00, 0x01, 0x00, 0x00, 0x00, 0xff]);
        if binary_marker {
            let hex: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            out.push(format!(
                "binary:{hex} {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .collect::<String>()
            ));
        } else if printable * 100 >= bytes.len() * 90 {
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}

/// The forms of a text to match: as it came, fully decoded, and its base64 segments decoded, each
/// normalised.
pub fn forms(text: &str) -> Vec<String> {
    let text = match text.char_indices().nth(TEXT_BYTES_MAX) {
        Some((i, _)) => &text[..i],
        None => text,
    };
    let mut decoded = Cow::Borrowed(text);
    for _ in 0..4 {
        let next = match decode_round(&decoded) {
            Cow::Owned(next) if next != *decoded => next,
            _ => break,
        };
        decoded = Cow::Owned(next);
    }
    let decoded = decoded.as_ref();
    let mut out = vec![normalise(text)];
    if decoded != text {
        let full = normalise(decoded);
        if full != out[0] {
            out.push(full);
        }
    }
    // Shell quoting inside a word (`w'h'o'am'i`, `wh\\oami`, `who$@ami`) removed, as the shell does.
    let full = out.last().expect("one form at least");
    if full.contains(['\'', '"', '\\', '$']) {
        let unquoted = shell_unquoted(full);
        if !out.contains(&unquoted) {
            out.push(unquoted);
        }
    }
    for segment in
        base64_segments(text).into_iter().chain(if decoded != text { base64_segments(decoded) } else { Vec::new() })
    {
        out.push(normalise(&decode_round(&segment)));
    }
    out
}

/// One round of every decoder: URL, HTML, escapes, then log4j lookups. Borrowed when nothing decoded.
fn decode_round(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for step in [url_decode, html_decode, unescape, resolve_lookups] {
        let next = match step(&out) {
            Cow::Owned(next) => Some(next),
            Cow::Borrowed(_) => None,
        };
        if let Some(next) = next {
            out = Cow::Owned(next);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms_decode_including_double_unicode_and_overlong() {
        assert_eq!(url_decode("%27%20OR%201%3D1"), "' OR 1=1");
        assert_eq!(url_decode(&url_decode("%252e%252e%252f")), "../");
        assert_eq!(url_decode("%u0027"), "'");
        assert_eq!(url_decode("..%c0%af..%c0%afetc"), "../../etc");
        // A `%` that starts no escape is dropped, as IIS does: sqlmap's `percentage` tamper.
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("<%= 7*7 %>"), "<%= 7*7 %>");
        assert_eq!(url_decode("%zz%4"), "zz4");
        assert_eq!(url_decode("%S%E%L%E%C%T"), "SELECT");
        // An overlong lead byte before ASCII is dropped by the decoders it aims at.
        assert_eq!(url_decode("..%c0%2f..%c0%2fetc"), "../../etc");
        assert_eq!(url_decode("a+b"), "a b");
    }

    #[test]
    fn html_and_escapes_decode() {
        assert_eq!(html_decode("&lt;script&gt;&#x27;&#39&sol;"), "<script>''/");
        assert_eq!(html_decode("fish &chips & more"), "fish &chips & more");
        assert_eq!(unescape("\\u0027\\x3c\\u{2f}\\047"), "'</'");
        assert_eq!(unescape("C:\\\\path\\u12"), "C:\\\\path\\u12");
    }

    #[test]
    fn log4j_lookups_resolve() {
        assert_eq!(resolve_lookups("${${lower:j}ndi:${lower:l}dap://x}"), "${jndi:ldap://x}");
        assert_eq!(resolve_lookups("${${::-j}${::-n}di:rmi://x}"), "${jndi:rmi://x}");
        assert_eq!(resolve_lookups("${${env:NaN:-j}ndi${env:NaN:-:}ldap://x}"), "${jndi:ldap://x}");
        assert_eq!(resolve_lookups("price ${amount} due"), "price ${amount} due");
    }

    #[test]
    fn normalising_removes_comments_case_and_separators() {
        assert_eq!(normalise("UNION/**/SELECT"), "union select");
        assert_eq!(normalise("/*!50000UNION*/ /*!50000SELECT*/").trim(), "union select");
        assert_eq!(normalise("cat${IFS}/etc/passwd"), "cat /etc/passwd");
        assert_eq!(normalise("a \t b"), "a b");
        // A line break separates shell commands: a run of white space holding one is one line break.
        assert_eq!(normalise("42 \n env;"), "42\nenv;");
        assert_eq!(normalise("admin'/* rest"), "admin' /*");
        // Full-width forms and slash look-alikes, hex literals of path characters.
        assert_eq!(normalise("\u{ff0e}\u{ff0e}\u{2216}win.ini"), "..\\win.ini");
        assert_eq!(normalise("..0x2f..0x2fetc0x2fpasswd"), "../../etc/passwd");
        assert_eq!(shell_unquoted("w'h'o'am'i;wh\\oami;who$@ami"), "whoami;whoami;whoami");
        assert_eq!(shell_unquoted("don't 'quote' me"), "dont 'quote' me");
    }

    #[test]
    fn plain_text_passes_every_decoder_borrowed_and_normalises_as_before() {
        let plain = "INFO processed 25 records from the queue in 310 ms";
        for step in [url_decode, html_decode, unescape, resolve_lookups] {
            assert!(matches!(step(plain), Cow::Borrowed(_)));
        }
        assert!(matches!(decode_round(plain), Cow::Borrowed(_)));
        // Text a decoder acts on is decoded, the others pass it through.
        assert!(matches!(decode_round("a+b"), Cow::Owned(ref s) if s == "a b"));
        assert_eq!(normalise(plain), plain.to_lowercase());
        for (text, normal) in [
            (" lead and trail ", " lead and trail "),
            ("two  spaces", "two spaces"),
            ("tab\tand\x0bvt\x0cff", "tab and vt ff"),
            ("crlf\r\nline", "crlf\nline"),
            ("nbsp\u{a0}and\u{2003}em", "nbsp and em"),
        ] {
            assert_eq!(normalise(text), normal, "{text:?}");
        }
    }

    #[test]
    fn base64_segments_decode_text_but_not_binary() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("' union select password from users--");
        assert_eq!(base64_segments(&format!("q={encoded}")), vec!["' union select password from users--"]);
        let png = base64::engine::general_purpose::STANDARD
            .encode([0x89u8, b'P', b'N', b'G', 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 1, 0]);
        assert!(base64_segments(&png).is_empty());
        let java = base64::engine::general_purpose::STANDARD
            .encode([0xacu8, 0xed, 0, 5, b's', b'r', 0, 0x17, b'j', b'a', b'v', b'a', b'.', b'u', b't', b'i', b'l']);
        assert!(base64_segments(&java)[0].starts_with("binary:aced0005"));
    }

    #[test]
    fn forms_never_panic_on_hostile_text() {
        for text in [
            "%",
            "%u",
            "%u12",
            "&#",
            "&#x;",
            "\\",
            "\\u{",
            "\\u{110000}",
            "${",
            "${${",
            "/*",
            "\u{10ffff}%c0",
            "&#99999999999;",
        ] {
            let _ = forms(text);
        }
        let long = "%41".repeat(100_000);
        assert!(forms(&long).iter().all(|f| f.len() <= TEXT_BYTES_MAX * 4));
    }
}
