// One entity (an address, principal, access key, function, execution environment, trace or request):
// the incidents that name it, what the tables hold about it, and its timeline.
import { el, failed, frame, page, param, quote, sql, table, text } from './common.js';

const kind = param('kind') || 'request';
const value = param('value') || '';
const { main } = await frame(kind + ' ' + value);
main.append(el('h1', { id: 'entity' }, el('span', { class: 'kind' }, kind), ' ', value));

const facts = {
  address: `SELECT 'invocations' AS source, count(*) AS rows, min(ts) AS first, max(ts) AS last FROM invocations WHERE source_ip = ${quote(value)}
            UNION ALL SELECT 'cloudtrail', count(*), min(event_time), max(event_time) FROM cloudtrail WHERE source_ip = ${quote(value)}`,
  principal: `SELECT 'cloudtrail' AS source, count(*) AS rows, min(event_time) AS first, max(event_time) AS last FROM cloudtrail WHERE principal_arn = ${quote(value)}
              UNION ALL SELECT 'invocations', count(*), min(ts), max(ts) FROM invocations WHERE principal = ${quote(value)}`,
  access_key: `SELECT 'cloudtrail' AS source, count(*) AS rows, min(event_time) AS first, max(event_time) AS last FROM cloudtrail WHERE access_key_id = ${quote(value)}`,
  function: `SELECT 'invocations' AS source, count(*) AS rows, min(ts) AS first, max(ts) AS last FROM invocations WHERE function_name = ${quote(value)}
             UNION ALL SELECT 'alerts', count(*), min(ts), max(ts) FROM alerts WHERE function_name = ${quote(value)}`,
  environment: `SELECT 'invocations' AS source, count(*) AS rows, min(ts) AS first, max(ts) AS last FROM invocations WHERE log_stream = ${quote(value)}
                UNION ALL SELECT 'logs', count(*), min(ts), max(ts) FROM logs WHERE log_stream = ${quote(value)}`,
};

try {
  const incidents = await sql(`SELECT DISTINCT ON (incident_id) incident_id, title, CAST(status AS VARCHAR) AS status, last_seen
                               FROM incidents WHERE strpos(entities, ${quote(JSON.stringify(value).slice(1, -1))}) > 0
                               ORDER BY incident_id, ts DESC`);
  main.append(el('h2', {}, 'Incidents'));
  main.append(
    incidents.rows.length
      ? table(['title', 'status', 'last_seen'], incidents.rows, (c, v, row) => (c === 'title' ? page('incident.html', { id: row.incident_id }, v) : text(v)))
      : el('p', { class: 'muted' }, 'No incident names it.'),
  );
  if (facts[kind]) {
    const known = await sql(facts[kind]);
    main.append(el('h2', {}, 'What the tables hold'), table(['source', 'rows', 'first', 'last'], known.rows));
  }
  const call = kind === 'environment' ? 'environment' : 'timeline';
  const timeline = await sql(`SELECT * FROM ${call}(${quote(value)}) LIMIT 1000`);
  const box = el('div', { id: 'timeline' });
  box.dataset.rows = String(timeline.rows.length);
  const cell = (column, v) => (column === 'row_id' && v ? page('entity.html', { kind: 'request', value: v }, v) : text(v));
  box.append(table(['ts', 'table_name', 'function_name', 'row_id', 'summary'], timeline.rows, cell, (row) => 't-' + String(row.table_name).replace(/[^a-z_]/g, '')));
  main.append(el('h2', {}, 'Timeline (first 1,000 rows)'), box);
} catch (error) {
  failed(main, error);
}
