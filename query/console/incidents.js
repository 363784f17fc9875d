// Incidents: the latest state of each, filterable by status, severity, function and time, refreshed
// every five seconds so that a running attack's incidents arrive while the page is open.
import { el, failed, frame, page, quote, severity, sql, table, text } from './common.js';

const SEVERITIES = ['low', 'medium', 'high', 'critical'];
const { main } = await frame('Incidents');
const status = el('select', { id: 'status' }, ['open', 'acknowledged', 'resolved', 'false_positive', 'any'].map((s) => el('option', { value: s }, s)));
const minimum = el('select', { id: 'severity' }, SEVERITIES.map((s) => el('option', { value: s }, s + ' and up')));
const fn = el('input', { id: 'function', placeholder: 'function name' });
const since = el('select', { id: 'since' }, [
  ['24 hours', 'last 24 hours'], ['7 days', 'last 7 days'], ['30 days', 'last 30 days'], ['', 'any time'],
].map(([v, label]) => el('option', { value: v }, label)));
since.value = '';
const results = el('div', { id: 'incidents' });
const updated = el('span', { class: 'muted', id: 'updated' });
main.append(el('h1', {}, 'Incidents'), el('div', { class: 'filters' }, 'Status', status, 'Severity', minimum, fn, since, updated), results);

function query() {
  const where = [];
  if (status.value !== 'any') where.push('status = ' + quote(status.value));
  else where.push("status <> 'merged'");
  const allowed = SEVERITIES.slice(SEVERITIES.indexOf(minimum.value)).map(quote).join(', ');
  where.push('CAST(severity AS VARCHAR) IN (' + allowed + ')');
  if (fn.value.trim()) where.push('strpos(entities, ' + quote(JSON.stringify(['function', fn.value.trim()])) + ') > 0');
  if (since.value) where.push('last_seen >= now() - INTERVAL ' + quote(since.value));
  return `SELECT incident_id, CAST(severity AS VARCHAR) AS severity, title, CAST(status AS VARCHAR) AS status,
                 alert_count, first_seen, last_seen, assignee, summary
          FROM (SELECT DISTINCT ON (incident_id) * FROM incidents ORDER BY incident_id, ts DESC, alert_count DESC) latest
          WHERE ${where.join(' AND ')}
          ORDER BY last_seen DESC LIMIT 500`;
}

async function refresh() {
  try {
    const result = await sql(query());
    const columns = ['severity', 'title', 'status', 'alert_count', 'first_seen', 'last_seen', 'assignee'];
    const cell = (column, value, row) => {
      if (column === 'severity') return severity(value);
      if (column === 'title') return el('div', {}, page('incident.html', { id: row.incident_id }, value), el('div', { class: 'muted' }, row.summary));
      return text(value);
    };
    results.replaceChildren(
      result.rows.length ? table(columns, result.rows, cell) : el('p', { class: 'muted' }, 'No incident matches.'),
    );
    results.dataset.count = String(result.rows.length);
    updated.textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (error) {
    results.replaceChildren();
    failed(results, error);
  }
}

for (const input of [status, minimum, since]) input.addEventListener('change', refresh);
fn.addEventListener('change', refresh);
await refresh();
setInterval(refresh, 5000);
