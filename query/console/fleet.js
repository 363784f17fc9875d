// The fleet: every function's last hour (rate, errors, cost) as sparklines, ingest health (dead letters)
// and the ledger's head.
import { el, failed, frame, page, sql, table, text } from './common.js';
import { sparkline } from './charts.js';

const { main } = await frame('Fleet');
main.append(el('h1', {}, 'Fleet'));
const functions = el('div', { id: 'functions' });
const health = el('div', { id: 'health' });
const ledger = el('div', { id: 'ledger' });
main.append(el('h2', {}, 'Functions, last hour of data'), functions, el('h2', {}, 'Ingest health'), health, el('h2', {}, 'Ledger'), ledger);

try {
  const minutes = await sql(`SELECT CAST(function_name AS VARCHAR) AS function_name, time_bucket('1m', ts) AS minute, count(*) AS invocations,
                                    sum(CASE WHEN status <> 'success' THEN 1 ELSE 0 END) AS errors,
                                    sum(CAST(billed_duration_ms AS DOUBLE) * memory_size_mb) / 1024000.0 AS gb_seconds
                             FROM invocations WHERE ts >= (SELECT max(ts) FROM invocations) - INTERVAL '1 hour'
                             GROUP BY 1, 2 ORDER BY 1, 2`);
  const byFunction = new Map();
  for (const row of minutes.rows) {
    if (!byFunction.has(row.function_name)) byFunction.set(row.function_name, []);
    byFunction.get(row.function_name).push(row);
  }
  const rows = [...byFunction].map(([name, points]) => ({
    function: name,
    invocations: points.reduce((s, p) => s + Number(p.invocations), 0),
    errors: points.reduce((s, p) => s + Number(p.errors), 0),
    gb_seconds: points.reduce((s, p) => s + Number(p.gb_seconds), 0).toFixed(1),
    points,
  }));
  const cell = (column, value, row) => {
    if (column === 'function') return el('a', { href: '/console/entity.html?' + new URLSearchParams({ kind: 'function', value }) }, value);
    if (column === 'rate') return sparkline(row.points.map((p) => Number(p.invocations)));
    if (column === 'error rate') return sparkline(row.points.map((p) => Number(p.errors)));
    if (column === 'cost') return sparkline(row.points.map((p) => Number(p.gb_seconds)));
    return text(value);
  };
  functions.append(rows.length ? table(['function', 'invocations', 'rate', 'errors', 'error rate', 'gb_seconds', 'cost'], rows, cell) : el('p', { class: 'muted' }, 'No invocations stored.'));
} catch (error) {
  failed(functions, error);
}
try {
  const dead = await sql(`SELECT CAST(ingest_source AS VARCHAR) AS source, CAST(reason AS VARCHAR) AS reason, count(*) AS records, max(ts) AS last
                          FROM dead_letters GROUP BY 1, 2 ORDER BY records DESC LIMIT 50`);
  health.append(dead.rows.length ? table(['source', 'reason', 'records', 'last'], dead.rows) : el('p', { class: 'muted' }, 'No dead-lettered records.'));
  // Sources, positions, late and dead-lettered records: this process's counters, from its /metrics.
  const metrics = await (await fetch('/metrics')).text();
  const wanted = /^(ingest_records_total|ingest_dead_letters_total|ingest_source_errors_total|ingest_pending_invocations|ingest_kafka_[a-z_]+|detect_late_rows_total|detect_late_invocations_total|store_rows_flushed_total)(\{[^}]*\})? ([0-9.eE+-]+)$/;
  const counters = metrics
    .split('\n')
    .map((line) => line.match(wanted))
    .filter(Boolean)
    .map(([, name, labels, value]) => ({ metric: name, labels: (labels || '').slice(1, -1), value: Number(value) }));
  const box = el('div', { id: 'counters' });
  box.append(counters.length ? table(['metric', 'labels', 'value'], counters) : el('p', { class: 'muted' }, 'No ingest counters yet.'));
  health.append(el('p', { class: 'muted' }, 'This process since it started (', el('a', { href: '/metrics' }, '/metrics'), '):'), box);
} catch (error) {
  failed(health, error);
}
try {
  const head = await sql('SELECT ts, node, seq, op, table_name, sha256 FROM ledger ORDER BY ts DESC, seq DESC LIMIT 1');
  ledger.append(head.rows.length ? table(head.columns.map((c) => c.name), head.rows) : el('p', { class: 'muted' }, 'The ledger is empty.'));
  const anchored = await sql(`SELECT max(ts) AS last_anchored, count(*) AS anchors FROM alert_deliveries
                              WHERE alert_id LIKE 'ledger:%' AND state = 'delivered'`);
  const last = anchored.rows[0] && anchored.rows[0].last_anchored;
  ledger.append(el('p', { id: 'anchored' }, last ? `Head last anchored outside coldtrail at ${last} (${anchored.rows[0].anchors} times).`
    : 'The head has not been anchored outside coldtrail: configure [alerting.ledger] (a webhook or an Object Lock bucket).'));
  ledger.append(el('p', { class: 'muted' }, 'Check it with ', el('code', {}, 'coldtrail verify'), '; see also ', page('sql.html', {}, 'the SQL workbench'), '.'));
} catch (error) {
  failed(ledger, error);
}
