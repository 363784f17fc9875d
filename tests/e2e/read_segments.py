"""Reads coldtrail's Parquet segments with DuckDB and pyarrow and compares rows and schema with what
coldtrail reports. Usage: read_segments.py DATA_DIR INFO_JSON SCHEMA_JSON"""
import json
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

data, info_path, schema_path = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
info = json.load(open(info_path))
schema = json.load(open(schema_path))

ARROW_TYPES = {
    'Timestamp(µs, "+00:00")': pa.timestamp("us", tz="+00:00"),
    "Dictionary(Int32, Utf8)": pa.dictionary(pa.int32(), pa.string()),
    "Utf8": pa.string(),
    "Int64": pa.int64(),
    "Float64": pa.float64(),
    "Boolean": pa.bool_(),
    "Binary": pa.binary(),
}

problems = []
checked = 0
for table, stats in info["tables"].items():
    files = sorted((data / table).glob("date=*/hour=*/*.parquet"))
    if stats["segments"] == 0:
        continue
    if len(files) != stats["segments"]:
        problems.append(f"{table}: {len(files)} files, coldtrail says {stats['segments']} segments")
    glob = str(data / table / "**" / "*.parquet")
    rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()[0][0]
    if rows != stats["segment_rows"]:
        problems.append(f"{table}: DuckDB counts {rows} rows, coldtrail {stats['segment_rows']}")
    columns = [c[0] for c in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = false)").fetchall()]
    hive = [c[0] for c in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()]
    if hive[-2:] != ['date', 'hour']:
        problems.append(f"{table}: DuckDB does not see the date and hour partitions: {hive}")
    expected_columns = [c["name"] for c in schema["tables"][table]]
    if columns != expected_columns:
        problems.append(f"{table}: DuckDB columns {columns} != {expected_columns}")
    expected = pa.schema([pa.field(c["name"], ARROW_TYPES[c["type"]], c["nullable"]) for c in schema["tables"][table]])
    for file in files:
        parquet = pq.ParquetFile(file)
        if not parquet.schema_arrow.equals(expected):
            problems.append(f"{file}: pyarrow schema {parquet.schema_arrow} != {expected}")
        meta = parquet.metadata.metadata or {}
        if meta.get(b"coldtrail.table") != table.encode():
            problems.append(f"{file}: coldtrail.table metadata is {meta.get(b'coldtrail.table')}")
        pyarrow_rows = parquet.metadata.num_rows
        times = pq.read_table(file, columns=[expected.names[0]]).column(0).to_pylist()
        if times != sorted(times):
            problems.append(f"{file}: rows are not sorted by time")
        checked += pyarrow_rows
    print(f"{table}: {len(files)} segments, {rows} rows read by DuckDB and pyarrow")

if checked == 0:
    problems.append("no rows were checked")
for problem in problems:
    print("problem:", problem)
sys.exit(1 if problems else 0)
