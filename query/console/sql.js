// The SQL workbench: the schema at hand, results as a table, CSV and JSON downloads, a chart when the
// result has a time column, and the user's own history from the query audit.
import { el, failed, frame, sql, table, text } from './common.js';
import { timeChart } from './charts.js';

const { main } = await frame('SQL');
const editor = el('textarea', { id: 'query', spellcheck: 'false' }, 'SELECT ts, severity, detector, function_name, title FROM alerts ORDER BY ts DESC LIMIT 50');
const run = el('button', { type: 'button', id: 'run' }, 'Run');
const csv = el('button', { type: 'button', id: 'download-csv' }, 'Download CSV');
const json = el('button', { type: 'button', id: 'download-json' }, 'Download JSON');
const status = el('span', { class: 'muted', id: 'status' });
const results = el('div', { id: 'results' });
const chart = el('div', { id: 'result-chart' });
const schema = el('div', { class: 'schema', id: 'schema' });
const history = el('div', { id: 'history' });
main.append(
  el('h1', {}, 'SQL workbench'),
  el('div', { class: 'columns' }, schema, el('div', {}, editor, el('div', { class: 'toolbar' }, run, csv, json, status), chart, results)),
  el('h2', {}, 'Your recent statements'),
  history,
);

async function showSchema() {
  try {
    const columns = await sql(`SELECT table_name, column_name, data_type FROM information_schema.columns
                               WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`);
    const byTable = new Map();
    for (const row of columns.rows) {
      if (!byTable.has(row.table_name)) byTable.set(row.table_name, []);
      byTable.get(row.table_name).push(row);
    }
    schema.replaceChildren(
      ...[...byTable].map(([name, cols]) =>
        el('details', {}, el('summary', {}, name), el('ul', {}, cols.map((c) => el('li', {}, c.column_name, ' ', el('span', { class: 'muted' }, c.data_type))))),
      ),
    );
  } catch (error) {
    failed(schema, error);
  }
}

async function showHistory() {
  try {
    // Analysts may not read query_audit: the server answers with the caller's own statements only.
    const response = await fetch('/api/v1/history', { credentials: 'same-origin' });
    if (!response.ok) throw new Error((await response.json()).error);
    const rows = await response.json();
    history.replaceChildren(table(['ts', 'status', 'rows', 'ms', 'sql'], rows.rows));
  } catch (error) {
    failed(history, error);
  }
}

async function execute() {
  status.textContent = 'running…';
  results.replaceChildren();
  chart.replaceChildren();
  const started = performance.now();
  try {
    const result = await sql(editor.value);
    const columns = result.columns.map((c) => c.name);
    results.append(table(columns, result.rows, (c, v) => text(v)));
    results.dataset.rows = String(result.rows.length);
    status.textContent = `${result.rows.length} rows in ${Math.round(performance.now() - started)} ms`;
    const time = result.columns.find((c) => c.type.startsWith('Timestamp'));
    const numbers = result.columns.filter((c) => /^(Int|UInt|Float|Decimal)/.test(c.type)).slice(0, 4);
    if (time && numbers.length && result.rows.length > 1) {
      const series = numbers.map((c) => ({ name: c.name, points: result.rows.map((r) => [Date.parse(r[time.name]), Number(r[c.name])]).sort((a, b) => a[0] - b[0]) }));
      chart.append(timeChart(series));
    }
  } catch (error) {
    status.textContent = '';
    failed(results, error);
  }
  showHistory();
}

async function download(format) {
  try {
    const body = await sql(editor.value, format);
    const blob = new Blob([typeof body === 'string' ? body : JSON.stringify(body)], { type: format === 'csv' ? 'text/csv' : 'application/json' });
    const link = el('a', { href: URL.createObjectURL(blob), download: 'coldtrail-result.' + format });
    document.body.append(link);
    link.click();
    link.remove();
  } catch (error) {
    failed(results, error);
  }
}

run.addEventListener('click', execute);
editor.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) execute();
});
csv.addEventListener('click', () => download('csv'));
json.addEventListener('click', () => download('json'));
showSchema();
showHistory();
