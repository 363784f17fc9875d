"""Every common PostgreSQL client against `coldtrail serve`, unchanged: SQLAlchemy with pandas.read_sql,
psycopg 3 (server-side binding, client-side binding, COPY TO STDOUT), node-postgres, JDBC with DBeaver's
metadata calls, and psql's `\\d`. Each runs one parameterised forensic query (a principal's CloudTrail
calls after a time, by event name) and its result is compared with DuckDB's answer over the same
segment files.

Usage: clients.py DATA_DIR PG_PORT PASSWORD  (TLS is required by the server; every client uses it)"""
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb

data, port, password = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
here = Path(__file__).resolve().parent
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    if not ok:
        failures.append(name)


# The oracle: DuckDB over the sealed cloudtrail segments.
glob = str(data / "cloudtrail" / "**" / "*.parquet")
duck = duckdb.connect()
duck.execute(f"CREATE VIEW cloudtrail AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)")
principal, since = duck.execute(
    "SELECT principal_arn, min(event_time) FROM cloudtrail WHERE principal_arn IS NOT NULL "
    "GROUP BY 1 HAVING count(DISTINCT event_name) > 2 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()
since = since.astimezone(timezone.utc)
expected = [(name, n) for name, n in duck.execute(
    "SELECT event_name, count(*) AS n FROM cloudtrail WHERE principal_arn = ? AND event_time > ? "
    "GROUP BY event_name ORDER BY n DESC, event_name", [principal, since]).fetchall()]
assert len(expected) >= 2, f"the sample store has too few calls for a test: {expected}"
since_text = since.isoformat()

QUERY_NAMED = ("SELECT event_name, count(*) AS n FROM cloudtrail WHERE principal_arn = %(p)s "
               "AND event_time > %(t)s GROUP BY event_name ORDER BY n DESC, event_name")
QUERY_DOLLAR = ("SELECT event_name, count(*) AS n FROM cloudtrail WHERE principal_arn = $1 "
                "AND event_time > $2 GROUP BY event_name ORDER BY n DESC, event_name")
dsn = f"host=127.0.0.1 port={port} user=admin password={password} dbname=coldtrail sslmode=require"


def rows(result):
    return [(str(name), int(n)) for name, n in result]


# SQLAlchemy and pandas: the engine asks version(), the catalog (has_table, get_columns), then binds.
try:
    import pandas as pd
    import sqlalchemy as sa
    engine = sa.create_engine(f"postgresql+psycopg://admin:{password}@127.0.0.1:{port}/coldtrail?sslmode=require")
    frame = pd.read_sql(sa.text(QUERY_NAMED.replace("%(p)s", ":p").replace("%(t)s", ":t")), engine,
                        params={"p": principal, "t": since})
    check("SQLAlchemy + pandas.read_sql answers the parameterised query",
          rows(frame.itertuples(index=False)) == expected, f"{frame} != {expected}")
    inspector = sa.inspect(engine)
    check("SQLAlchemy sees the server as PostgreSQL 16",
          engine.dialect.server_version_info[:1] == (16,), str(engine.dialect.server_version_info))
    # get_columns, get_pk_constraint and get_indexes send queries DataFusion does not plan (correlated
    # scalar subqueries without an aggregate, unnest of an int2vector): see ARCHITECTURE.md, query.
    tables, views = inspector.get_table_names(), inspector.get_view_names()
    check("SQLAlchemy's inspector lists the tables and views and finds a table",
          {"cloudtrail", "invocations", "alerts"} <= set(tables) and "recent_alerts" in views
          and inspector.has_table("cloudtrail"), f"{tables} {views}")
    engine.dispose()
except Exception as e:  # noqa: BLE001 - any failure of a client is a failed check
    check("SQLAlchemy + pandas.read_sql", False, repr(e))

# psycopg 3: server-side binding (extended protocol), client-side binding (simple protocol), COPY.
try:
    import psycopg
    with psycopg.connect(dsn) as conn:
        got = rows(conn.execute(QUERY_NAMED, {"p": principal, "t": since}).fetchall())
        check("psycopg 3 with server-side binding", got == expected, f"{got} != {expected}")
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(QUERY_NAMED, {"p": principal, "t": since})
            got = rows(cur.fetchall())
        check("psycopg 3 with client-side binding", got == expected, f"{got} != {expected}")
        try:
            copied = []
            with conn.cursor().copy(
                    "COPY (SELECT event_name, count(*) AS n FROM cloudtrail WHERE principal_arn = "
                    + psycopg.sql.quote(principal) + " AND event_time > "
                    + psycopg.sql.quote(since_text) + "::timestamptz GROUP BY event_name "
                    "ORDER BY n DESC, event_name) TO STDOUT") as copy:
                for row in copy.rows():
                    copied.append(row)
            got = [(name, int(n)) for name, n in copied]
            check("psycopg 3 COPY (query) TO STDOUT", got == expected, f"{got} != {expected}")
        except psycopg.Error as e:
            conn.rollback()
            message = str(e)
            check("psycopg 3 COPY TO STDOUT is refused with a clear error", "COPY" in message, message)
except Exception as e:  # noqa: BLE001
    check("psycopg 3", False, repr(e))

# psql's \d describes a table through the catalog.
out = subprocess.run(["psql", dsn, "-Xc", r"\d cloudtrail"], capture_output=True, text=True)
check("psql \\d cloudtrail describes the table's columns and types",
      out.returncode == 0 and "principal_arn" in out.stdout and "timestamp" in out.stdout, out.stdout + out.stderr)

# node-postgres, installed from npm into a cache directory.
node_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coldtrail-e2e-node"
if not (node_dir / "node_modules" / "pg").exists():
    node_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "install", "--silent", "--prefix", str(node_dir), "pg@8"], check=True)
env = dict(os.environ, NODE_PATH=str(node_dir / "node_modules"))
out = subprocess.run(["node", str(here / "node_pg.js"), str(port), password, QUERY_DOLLAR, principal, since_text],
                     capture_output=True, text=True, env=env)
try:
    got = [(name, int(n)) for name, n in json.loads(out.stdout)]
    check("node-postgres answers the parameterised query", got == expected, f"{got} != {expected}")
except ValueError:
    check("node-postgres answers the parameterised query", False, out.stdout + out.stderr)

# JDBC: pgjdbc from Debian, DBeaver's metadata calls and a prepared statement.
jar = "/usr/share/java/postgresql.jar"
out = subprocess.run(["java", "-cp", jar, str(here / "Jdbc.java"), str(port), password, QUERY_DOLLAR.replace("$1", "?").replace("$2", "?"),
                      principal, since_text], capture_output=True, text=True)
try:
    result = json.loads(out.stdout)
    got = [(name, int(n)) for name, n in result["rows"]]
    check("JDBC prepared statement answers the parameterised query", got == expected, f"{got} != {expected}")
    check("JDBC getTables lists the store's tables", {"cloudtrail", "invocations", "alerts"} <= set(result["tables"]),
          str(result["tables"]))
    check("JDBC getColumns lists a table's columns with types",
          ["event_time", "timestamptz"] in result["columns"] or ["event_time", "timestamp"] in result["columns"],
          str(result["columns"][:5]))
    check("JDBC getPrimaryKeys answers (no keys)", result["primary_keys"] == 0, str(result["primary_keys"]))
except (ValueError, KeyError):
    check("JDBC", False, out.stdout + out.stderr)

sys.exit(1 if failures else 0)
