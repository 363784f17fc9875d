// One incident: its story, entities (each a pivot), ATT&CK chain, alerts with their evidence, triage,
// the function's minutes around it with the alerts marked, and its evidence timeline by table.
import { el, entityLink, failed, frame, page, param, parseList, quote, severity, sql, table, text } from './common.js';
import { timeChart } from './charts.js';

const id = param('id') || '';
const { main } = await frame('Incident ' + id);
const ms = (value) => Date.parse(value);

try {
  const found = await sql(`SELECT incident_id, CAST(status AS VARCHAR) AS status, CAST(severity AS VARCHAR) AS severity,
                                  title, summary, first_seen, last_seen, alert_count, alert_ids, entities, tactics,
                                  techniques, assignee, note, changed_by, merged_into
                           FROM incidents WHERE incident_id = ${quote(id)} ORDER BY ts DESC, alert_count DESC LIMIT 1`);
  if (!found.rows.length) throw new Error('No incident ' + id);
  const incident = found.rows[0];
  const entities = parseList(incident.entities);
  const alertIds = parseList(incident.alert_ids);
  main.append(el('div', {},
    el('h1', { id: 'title' }, severity(incident.severity), ' ', incident.title),
    el('p', { class: 'muted' }, `${incident.status} · ${incident.alert_count} alerts · ${incident.first_seen} → ${incident.last_seen}`,
      incident.assignee ? ' · assigned to ' + incident.assignee : '', incident.merged_into ? ' · merged into ' : '',
      incident.merged_into ? page('incident.html', { id: incident.merged_into }, incident.merged_into) : null),
    el('p', { class: 'story', id: 'story' }, incident.summary),
    incident.note ? el('p', { class: 'muted', id: 'note' }, 'Note (' + (incident.changed_by || '') + '): ', incident.note) : null,
  ));

  // Triage: stored as the analyst's own row of the incident (CALL incident_status / assign / note).
  const status = el('select', { id: 'triage-status' }, ['open', 'acknowledged', 'resolved', 'false_positive'].map((s) => el('option', { value: s }, s)));
  status.value = incident.status === 'merged' ? 'open' : incident.status;
  const assignee = el('input', { id: 'triage-assignee', placeholder: 'assignee', value: incident.assignee || '' });
  const note = el('input', { id: 'triage-note', placeholder: 'note', size: 50 });
  const saved = el('span', { class: 'muted', id: 'triage-result' });
  const save = el('button', { type: 'button', id: 'triage-save' }, 'Save');
  save.addEventListener('click', async () => {
    try {
      const noteArg = note.value.trim() ? ', ' + quote(note.value.trim()) : '';
      if (status.value !== incident.status) await sql(`CALL incident_status(${quote(id)}, ${quote(status.value)}${noteArg})`);
      else if (noteArg) await sql(`CALL incident_note(${quote(id)}${noteArg})`);
      if ((assignee.value.trim() || null) !== (incident.assignee || null)) {
        await sql(`CALL incident_assign(${quote(id)}, ${assignee.value.trim() ? quote(assignee.value.trim()) : 'NULL'})`);
      }
      saved.textContent = 'saved';
      location.reload();
    } catch (error) {
      saved.textContent = String(error.message || error);
    }
  });
  main.append(el('h2', {}, 'Triage'), el('div', { class: 'toolbar' }, status, assignee, note, save, saved));

  // Who and what first; the execution environments and traces (often many) folded.
  const many = (kind) => kind === 'environment' || kind === 'trace';
  const folded = entities.filter(([kind]) => many(kind));
  main.append(
    el('h2', {}, 'Entities'),
    el('div', { class: 'entities', id: 'entities' }, entities.filter(([kind]) => !many(kind)).map(([kind, value]) => entityLink(kind, value))),
    folded.length
      ? el('details', {}, el('summary', {}, `${folded.filter(([k]) => k === 'environment').length} execution environments, ${folded.filter(([k]) => k === 'trace').length} traces`),
          el('div', { class: 'entities' }, folded.map(([kind, value]) => entityLink(kind, value))))
      : el('span', {}),
  );
  const techniques = parseList(incident.techniques);
  main.append(
    el('h2', {}, 'ATT&CK chain'),
    el('div', { class: 'chain', id: 'chain' }, parseList(incident.tactics).map((t) => el('span', { class: 'tactic' }, t))),
    el('p', { class: 'muted' }, 'Techniques: ', techniques.join(', ')),
  );

  const alertsBox = el('div', { id: 'alerts' });
  const chartBox = el('div', { id: 'chart' });
  const timelineBox = el('div', { id: 'timeline' });
  main.append(el('h2', {}, 'Alerts'), alertsBox, el('h2', {}, 'Around it'), chartBox, el('h2', {}, 'Evidence timeline'), timelineBox);

  let alerts = [];
  if (alertIds.length) {
    const result = await sql(`SELECT DISTINCT ON (alert_id) alert_id, ts, CAST(severity AS VARCHAR) AS severity,
                                     CAST(detector AS VARCHAR) AS detector, title, CAST(function_name AS VARCHAR) AS function_name, evidence
                              FROM alerts WHERE alert_id IN (${alertIds.map(quote).join(', ')})
                              ORDER BY alert_id, ts DESC`);
    alerts = result.rows.sort((a, b) => ms(a.ts) - ms(b.ts));
    const cell = (column, value) => {
      if (column === 'severity') return severity(value);
      if (column === 'evidence') return el('span', {}, parseList(value).slice(0, 12).map((r) => [entityLink('request', r), ' ']));
      return text(value);
    };
    alertsBox.append(table(['ts', 'severity', 'detector', 'title', 'function_name', 'evidence'], alerts, cell));
  }

  const fnEntity = entities.find(([kind]) => kind === 'function');
  if (fnEntity) {
    const from = new Date(ms(incident.first_seen) - 30 * 60_000).toISOString();
    const to = new Date(ms(incident.last_seen) + 30 * 60_000).toISOString();
    const minutes = await sql(`SELECT time_bucket('1m', ts) AS minute, count(*) AS invocations,
                                      sum(CASE WHEN status <> 'success' THEN 1 ELSE 0 END) AS errors,
                                      approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
                                      sum(CAST(billed_duration_ms AS DOUBLE) * memory_size_mb) / 1024000.0 AS gb_seconds
                               FROM invocations
                               WHERE function_name = ${quote(fnEntity[1])} AND ts >= ${quote(from)} AND ts < ${quote(to)}
                               GROUP BY 1 ORDER BY 1`);
    const series = ['invocations', 'errors', 'p95_ms', 'gb_seconds'].map((name) => ({
      name,
      points: minutes.rows.map((r) => [ms(r.minute), Number(r[name])]),
    }));
    chartBox.append(el('p', { class: 'muted' }, fnEntity[1] + ', per minute'), timeChart(series, alerts.map((a) => ({ ms: ms(a.ts), label: a.title }))));
  } else {
    chartBox.append(el('p', { class: 'muted' }, 'The incident names no function.'));
  }

  const timeline = await sql(`SELECT * FROM incident(${quote(id)}) LIMIT 2000`);
  timelineBox.dataset.rows = String(timeline.rows.length);
  const cell = (column, value) => (column === 'row_id' && value ? page('entity.html', { kind: 'request', value }, value) : text(value));
  timelineBox.append(table(['ts', 'table_name', 'function_name', 'row_id', 'summary'], timeline.rows, cell, (row) => 't-' + String(row.table_name).replace(/[^a-z_]/g, '')));
  // When the whole page was there, from the start of its navigation (read by the browser test and bench).
  document.body.dataset.loadedMs = String(Math.round(performance.now()));
} catch (error) {
  failed(main, error);
}
