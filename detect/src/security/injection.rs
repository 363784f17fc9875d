//! Event injection in trigger payloads and logged input: every string of a payload (JSON walked, bodies
//! that are JSON or base64 opened) is decoded into its forms (`decode::forms`) and matched against rules
//! per class. A hit carries the field, the decoded snippet and the rule.

use regex::{Regex, RegexSet};
use serde_json::Value;

use super::decode;

/// The classes of injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Sql,
    Command,
    PathTraversal,
    MetadataSsrf,
    Jndi,
    Template,
    Xxe,
    Deserialization,
    NoSql,
}

impl Class {
    pub const ALL: [Class; 9] = [
        Class::Sql,
        Class::Command,
        Class::PathTraversal,
        Class::MetadataSsrf,
        Class::Jndi,
        Class::Template,
        Class::Xxe,
        Class::Deserialization,
        Class::NoSql,
    ];

    /// The detection id.
    pub fn detection(self) -> &'static str {
        match self {
            Class::Sql => "injection.sql",
            Class::Command => "injection.command",
            Class::PathTraversal => "injection.path_traversal",
            Class::MetadataSsrf => "injection.metadata_ssrf",
            Class::Jndi => "injection.jndi",
            Class::Template => "injection.template",
            Class::Xxe => "injection.xxe",
            Class::Deserialization => "injection.deserialization",
            Class::NoSql => "injection.nosql",
        }
    }

    /// The corpus name (`sql`, `command`, ...).
    pub fn name(self) -> &'static str {
        self.detection().trim_start_matches("injection.")
    }

    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The rules, over normalised (lower-case, decoded) text.
const RULES: &[(Class, &str, &str)] = &[
    // SQL injection.
    (Class::Sql, "sql.union_select", r#"\bunion(\s+(all|distinct))?\s*(\(\s*)?select\b"#),
    (
        Class::Sql,
        "sql.quote_boolean",
        r#"['"`)]\s*(or|and|xor|\|\||&&)\s*(\(\s*)?(['"`]?\w*['"`]?\s*(=|<>|!=|<=>|>|<|\blike\b|\bis\b|\bin\b)|\d+\s*(=|>|<|-)|true\b|false\b|not\b|\d+\s*$|sleep|exists)"#,
    ),
    (Class::Sql, "sql.numeric_tautology", r#"(^|=)\s*-?\d+\s*\)?\s*(or|and|\|\|)\s+(\d+\s*(=|<|>)\s*\d+|true|sleep)"#),
    (Class::Sql, "sql.comment_terminator", r#"['"]\s*\)*\s*(;\s*)?(--|#(\s|$)|/\*|;%00|\x00)"#),
    (
        Class::Sql,
        "sql.stacked",
        r#"['";)]\s*;?\s*(drop|delete|insert|update|alter|create|truncate|exec|execute|declare|shutdown|grant|select)\s+(table|from|into|database|schema|user|procedure|function|\w+\s+set|@|xp_|master\.|\*|\w+\s*\(|\d)"#,
    ),
    (
        Class::Sql,
        "sql.functions",
        r#"\b(pg_sleep\s*\(|sleep\s*\(\s*\d|benchmark\s*\(\s*\d|waitfor\s+(delay|time)\s+'|extractvalue\s*\(|updatexml\s*\(|load_file\s*\(|into\s+(out|dump)file\b|information_schema\.|xp_cmdshell|sp_executesql|dbms_pipe\.|utl_http\.|utl_inaddr\.|sysobjects\b|@@version|@@datadir|sqlite_master\b|pg_catalog\.pg_|current_user\s*\(|char\(\d+\)\s*(\+|\|\|)\s*char\(|concat\s*\(\s*0x|0x[0-9a-f]{6,}\s*(,|\)|$)|group_concat\s*\(|having\s+\d+\s*=\s*\d+|order\s+by\s+\d+\s*(--|#|/\*))"#,
    ),
    // OS command injection.
    (
        Class::Command,
        "command.separator_then_command",
        r#"(;|\|\|?|&&?|\$\(|`|\n|^)\s*(\(?\s*)(cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|dash|ksh|python[23]?|perl|ruby|php|powershell|pwsh|cmd(\.exe)?|nslookup|telnet|rm|chmod|chown|busybox|printenv|ifconfig|ipconfig|net\s+user|systeminfo|tasklist|mkfifo|base64|xxd|crontab|pkill|tftp|scp|ssh|socat|openssl|certutil|bitsadmin|mshta|rundll32|regsvr32|nohup)\b(\s+[-/$'".~\w]|\s*[;|&`)]|\s*$)"#,
    ),
    (
        Class::Command,
        "command.separator_then_argument",
        r#"(;|\|\|?|&&?|\$\(|`|\n)\s*(echo|sleep|ping|env|dig|host|find|head|tail|type|dir|kill|touch|tee|dd|sed|awk|timeout)(\s+(-\w|\$|/|['"]|\d+\s*($|[;|&`)])|[\w.-]+\s*\|)|\s*$|\s*[;|&`)])"#,
    ),
    (
        Class::Command,
        "command.substitution",
        r#"\$\((\s*[a-z/])|`\s*(id|whoami|uname|ls|cat|curl|wget|sleep|ping|echo|nslookup|hostname)\b[^`]*`"#,
    ),
    (
        Class::Command,
        "command.shell_paths",
        r#"(/bin/(ba|z|da|k)?sh\b|/usr/bin/(env|python|perl|nc|curl|wget)\b|cmd(\.exe)?\s+/c\b|powershell(\.exe)?\s+-(e|enc|encodedcommand|nop|c|command|w)\b|/dev/(tcp|udp)/|\bnc(at)?\s+(-\w+\s+)*-(e|c)\s|\bbash\s+-(i|c)\b|\bsh\s+-c\b|\|\s*(ba)?sh\b|\bmkfifo\s+/tmp/|base64\s+(-d|--decode)\b)"#,
    ),
    // Path traversal and local files.
    (
        Class::PathTraversal,
        "path.dot_dot",
        r#"(\.{2,}[/\\]+){2,}|(^|[/\\=:'])\.\.[/\\]+(etc|proc|var|usr|root|home|windows|winnt|boot|opt|tmp)\b|\.\.[/\\]+\.\.\b"#,
    ),
    (
        Class::PathTraversal,
        "path.sensitive_file",
        r#"(^|[/\\=:'`])(etc[/\\](passwd|shadow|group|hosts|issue|sudoers)|proc[/\\](self|\d+)[/\\](environ|cmdline|maps|fd|mem|root)|windows[/\\](win\.ini|system32)|boot\.ini|\.aws[/\\]credentials|\.ssh[/\\](id_\w+|authorized_keys)|var[/\\]task[/\\]|var[/\\]runtime[/\\]|\.env\b|web\.config|wp-config\.php)"#,
    ),
    (
        Class::PathTraversal,
        "path.file_scheme",
        r#"\b(file|php|phar|zip|expect|glob|data|jar|netdoc|gopher|dict)://(/|localhost|[a-z]:)?|php://(filter|input)"#,
    ),
    // SSRF to instance metadata and credential endpoints.
    (
        Class::MetadataSsrf,
        "ssrf.metadata_address",
        r#"169\.254\.169\.254|169\.254\.170\.2\b|fd00:ec2::254|metadata\.google\.internal|metadata\.azure\.(com|internal)|100\.100\.100\.200|\binstance-data\b"#,
    ),
    (
        Class::MetadataSsrf,
        "ssrf.metadata_encoded_address",
        r#"\b2852039166\b|\b0xa9fea9fe\b|0xa9\.0xfe\.0xa9\.0xfe|0251\.0376\.0251\.0376|\b0251\.0?376\.0?251\.0?376\b|::ffff:a9fe:a9fe|::ffff:169\.254\.|169\.254\.43518\b|0xa9\.254\.|169\.0xfe\.|\b169\.16689662\b|\[::169\.254\."#,
    ),
    (
        Class::MetadataSsrf,
        "ssrf.metadata_path",
        r#"/latest/(meta-data|user-data|api/token|dynamic/instance-identity)|/computemetadata/v1|/metadata/(instance|identity/oauth2)|/v2/credentials/|aws_container_credentials_relative_uri|/opc/v[12]/instance"#,
    ),
    // Log4Shell-style JNDI lookups (after `decode::resolve_lookups`).
    (
        Class::Jndi,
        "jndi.lookup",
        r#"\$\{\s*jndi\s*:|jndi\s*:\s*(ldap|ldaps|rmi|dns|iiop|corba|nds|nis|http|https)s?\s*:/"#,
    ),
    // Server-side template injection.
    (
        Class::Template,
        "template.arithmetic",
        r#"\{\{\s*\d+\s*[*+/-]\s*['\d]+\s*\}\}|\$\{\s*\d+\s*[*+/-]\s*\d+\s*\}|#\{\s*\d+\s*[*+/-]\s*\d+\s*\}|<%=?\s*\d+\s*[*+/-]\s*\d+\s*%>|\$\{\{\s*\d+\s*[*+/-]\s*\d+\s*\}\}|\[\[\s*\$\{\s*\d|\{\s*\d+\s*\*\s*\d+\s*\}\}|@\(\s*\d+\s*\*\s*\d+\s*\)"#,
    ),
    (
        Class::Template,
        "template.object_walk",
        r#"\{\{.{0,200}(__class__|__mro__|__subclasses__|__globals__|__builtins__|__init__|__import__|config\.items|request\.application|\blipsum\b|\bcycler\b|\bjoiner\b|self\._|\|attr\s*\(|popen|getattribute)|\{%.{0,200}(import|__class__|popen|system).{0,200}%\}"#,
    ),
    (
        Class::Template,
        "template.java_el",
        r#"[$#*@]\{[^}]{0,200}(t\s*\(\s*java\.|getclass\s*\(|getruntime|java\.lang\.|new\s+java|freemarker\.template|\.forname\s*\(|processbuilder|classloader|getmethod)|<#assign|\?new\s*\(\)|\$class\.inspect|#set\s*\(\s*\$\w+\s*=|\{php\}|\{\{\s*constructor\.constructor|<%=?\s*(system|exec|runtime|`|process|require|global\.)"#,
    ),
    // XML external entities and XInclude.
    (
        Class::Xxe,
        "xxe.entity",
        r#"<!doctype[^>]{0,200}\[|<!entity\s+(%\s*)?[\w.-]+\s+(system|public)\b|<!entity\s+%|xmlns:xi\s*=\s*['\x22]http://www\.w3\.org/2001/xinclude|<xi:include\b"#,
    ),
    // Insecure deserialization gadgets and markers.
    (
        Class::Deserialization,
        "deserialization.java",
        r#"\bro0ab[a-z0-9+/]|binary:aced0005|\baced0005|org\.apache\.commons\.collections\d*\.functors|invokertransformer|com\.sun\.rowset\.jdbcrowsetimpl|org\.springframework\.beans\.factory|java\.lang\.runtime|ysoserial|com\.sun\.org\.apache\.xalan|templatesimpl|org\.codehaus\.groovy\.runtime|c3p0\.|bsh\.interpreter"#,
    ),
    (
        Class::Deserialization,
        "deserialization.php",
        r#"\bo:\d+:"[a-z_\\][\w\\]*":\d+:\{|\bc:\d+:"[a-z_\\][\w\\]*":\d+:\{|\ba:\d+:\{(s|i):\d+[:;]"#,
    ),
    (
        Class::Deserialization,
        "deserialization.python_yaml_node",
        r#"!!python/(object|name|module|apply)|!!js/(function|regexp|undefined)|_\$\$nd_func\$\$_|\bcos\s*\n?\s*system|c__builtin__|cposix\b|\bcsubprocess\b|binary:8004|binary:8003|\bgasv[a-z0-9+/]{4,}|__reduce__"#,
    ),
    (
        Class::Deserialization,
        "deserialization.dotnet_json",
        r#"binary:0001000000ff|\baaeaaad/////|"\$type"\s*:\s*"system\.|objectdataprovider|system\.windows\.data|"@type"\s*:\s*"(com\.|java\.|org\.|javax\.)|system\.diagnostics\.process"#,
    ),
    // NoSQL operator injection.
    (
        Class::NoSql,
        "nosql.operator",
        r#"["']\$(ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|expr|function|accumulator|or|and|not|nor|elemmatch|all|size|type|jsonschema|text|mod)["']\s*:|\[\s*\$(ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|expr|or|and|not|nor|elemmatch)\s*\]"#,
    ),
    (
        Class::NoSql,
        "nosql.javascript",
        r#"\$where\b|['"]\s*;\s*(return\s+(true|1)|sleep\s*\()|\bthis\.\w+(\.\w+)*\s*(==|!=|>|<|\.match\s*\()|['"]\s*\|\|\s*['"]?1['"]?\s*==\s*['"]?1|db\.\w+\.(find|drop|insert|remove)\s*\(|\bmapreduce\b"#,
    ),
];

/// One match.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub class: Class,
    pub rule: &'static str,
    /// Where in the payload (`body.query`, `headers.User-Agent`, `message`).
    pub field: String,
    /// The decoded text around the match.
    pub snippet: String,
}

/// Most strings of one payload that are matched.
const STRINGS_MAX: usize = 4_096;
const DEPTH_MAX: usize = 16;

/// The compiled rules.
pub struct InjectionMatcher {
    set: RegexSet,
    rules: Vec<(Class, &'static str, Regex)>,
}

impl Default for InjectionMatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl InjectionMatcher {
    pub fn new() -> Self {
        let set = RegexSet::new(RULES.iter().map(|(_, _, p)| *p)).expect("the injection rules compile");
        let rules = RULES
            .iter()
            .map(|(class, name, pattern)| (*class, *name, Regex::new(pattern).expect("the injection rules compile")))
            .collect();
        InjectionMatcher { set, rules }
    }

    /// Matches one text (all its decoded forms); at most one hit per class.
    pub fn scan_text(&self, field: &str, text: &str, out: &mut Vec<Hit>) {
        if text.len() < 4 {
            return;
        }
        for form in decode::forms(text) {
            let matched = self.set.matches(&form);
            if !matched.matched_any() {
                continue;
            }
            for index in matched.iter() {
                let (class, rule, regex) = &self.rules[index];
                if out.iter().any(|h| h.class == *class) {
                    continue;
                }
                let snippet = regex.find(&form).map(|m| snippet(&form, m.start(), m.end())).unwrap_or_default();
                out.push(Hit { class: *class, rule, field: field.to_string(), snippet });
            }
        }
    }

    /// Matches every string of a payload: JSON is walked (keys too: NoSQL operators are keys), strings
    /// that are JSON themselves are opened, anything else is one text.
    pub fn scan_payload(&self, payload: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        match serde_json::from_str::<Value>(payload) {
            Ok(value) if value.is_object() || value.is_array() => {
                let mut budget = STRINGS_MAX;
                self.walk(&value, &mut String::new(), 0, &mut budget, &mut hits);
            }
            _ => self.scan_text("payload", payload, &mut hits),
        }
        hits
    }

    fn walk(&self, value: &Value, path: &mut String, depth: usize, budget: &mut usize, out: &mut Vec<Hit>) {
        if depth > DEPTH_MAX || *budget == 0 {
            return;
        }
        match value {
            Value::String(text) => {
                *budget -= 1;
                let trimmed = text.trim_start();
                if (trimmed.starts_with('{') || trimmed.starts_with('[')) && text.len() > 2 {
                    if let Ok(inner) = serde_json::from_str::<Value>(text) {
                        if inner.is_object() || inner.is_array() {
                            // A JSON body: its strings and keys are the input, not its punctuation.
                            self.walk(&inner, path, depth + 1, budget, out);
                            return;
                        }
                    }
                }
                let field = if path.is_empty() { "payload" } else { path.as_str() };
                self.scan_text(field, text, out);
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, path, depth + 1, budget, out);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let before = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    if key.starts_with('$') || key.contains('[') {
                        // A key is input too: `{"password": {"$ne": null}}`, `user[$ne]`.
                        *budget = budget.saturating_sub(1);
                        self.scan_text(path, &format!("\"{key}\": "), out);
                    }
                    self.walk(item, path, depth + 1, budget, out);
                    path.truncate(before);
                }
            }
            _ => {}
        }
    }
}

fn snippet(text: &str, start: usize, end: usize) -> String {
    let floor = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let from = floor(start.saturating_sub(40));
    let to = floor((end + 40).min(text.len()));
    text[from..to].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(payload: &str) -> Vec<Class> {
        InjectionMatcher::new().scan_payload(payload).into_iter().map(|h| h.class).collect()
    }

    #[test]
    fn every_rule_compiles_and_classes_have_names() {
        let matcher = InjectionMatcher::new();
        assert_eq!(matcher.rules.len(), RULES.len());
        for class in Class::ALL {
            assert_eq!(Class::from_name(class.name()), Some(class));
            assert!(RULES.iter().any(|(c, _, _)| *c == class));
        }
    }

    #[test]
    fn payload_fields_are_named_and_snippets_decoded() {
        let hits = InjectionMatcher::new()
            .scan_payload(r#"{"queryStringParameters":{"id":"1%27%20UNION%20SELECT%20password%20FROM%20users--"}}"#);
        assert_eq!(hits[0].class, Class::Sql);
        assert_eq!(hits[0].field, "queryStringParameters.id");
        assert!(hits[0].snippet.contains("union select password"), "{hits:?}");
    }

    #[test]
    fn bodies_that_are_json_strings_and_operator_keys_are_opened() {
        assert_eq!(classes(r#"{"body":"{\"user\":\"admin\",\"password\":{\"$ne\":null}}"}"#), vec![Class::NoSql]);
        assert_eq!(classes(r#"{"headers":{"User-Agent":"${${lower:j}ndi:ldap://x.example/a}"}}"#), vec![Class::Jndi]);
    }

    #[test]
    fn hostile_payloads_are_bounded_and_never_panic() {
        let matcher = InjectionMatcher::new();
        // Nested deeper than the JSON parser allows: matched as text.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matcher.scan_payload(&deep).is_empty());
        // Truncated JSON with an attack inside is still text with an attack.
        assert_eq!(classes(r#"{"q":"' UNION SELECT password FROM users--"#), vec![Class::Sql]);
        // Oversized: an attack past the matched prefix of one huge string is not searched for ever.
        let huge = format!("{}{}", "a".repeat(4 * decode::TEXT_BYTES_MAX), "' or 1=1--");
        assert!(matcher.scan_payload(&huge).is_empty());
        // Many strings: the budget bounds the work.
        let many = serde_json::to_string(&vec!["x".repeat(10); 100_000]).unwrap();
        assert!(matcher.scan_payload(&many).is_empty());
        for text in ["", "\u{0}", "%%%%", "${${${${", "<!--", "\u{feff}\u{202e}' or '1'='1"] {
            let _ = matcher.scan_payload(text);
        }
    }

    #[test]
    fn ordinary_text_is_not_an_attack() {
        for text in [
            r#"{"name":"Conor O'Brien","note":"Please select the items from the table where you left them"}"#,
            r#"{"comment":"Tom & Jerry -- the union of cats and mice; or so they say"}"#,
            r#"{"template":"Hello {{first_name}}, your order {{order_id}} ships today"}"#,
            r#"{"url":"https://example.com/search?q=rock+%26+roll&page=2"}"#,
        ] {
            assert!(classes(text).is_empty(), "{text}: {:?}", InjectionMatcher::new().scan_payload(text));
        }
    }
}
