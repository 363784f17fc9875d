// Admins only (the server refuses this page and its data to analysts): users and their roles (add and
// drop, through `CALL create_user` and `CALL drop_user`, audited without the password), the
// suppressions added at run time (add and lift, through `CALL suppress` and `CALL unsuppress`, audited),
// and the deliveries suppressed.
import { el, failed, frame, quote, sql, table } from './common.js';

const { main } = await frame('Admin');
main.append(el('h1', {}, 'Admin'));
const users = el('div', { id: 'users' });
const suppressions = el('div', { id: 'suppressions' });
const suppressed = el('div', { id: 'suppressed' });
main.append(el('h2', {}, 'Users'), users, el('h2', {}, 'Suppressions'), suppressions, el('h2', {}, 'Suppressed deliveries'), suppressed);

async function json(path) {
  const response = await fetch(path, { credentials: 'same-origin' });
  if (!response.ok) throw new Error((await response.json()).error);
  return response.json();
}

async function showUsers() {
  users.replaceChildren();
  try {
    const list = (await json('/api/v1/admin/users')).users;
    const cell = (column, value, row) => {
      if (column !== 'drop') return value === null || value === undefined ? '' : String(value);
      if (row.source !== 'added') return '';
      const drop = el('button', { type: 'button', class: 'drop-user' }, 'Drop');
      drop.addEventListener('click', async () => {
        try {
          await sql(`CALL drop_user(${quote(row.name)})`);
          showUsers();
        } catch (error) {
          failed(users, error);
        }
      });
      return drop;
    };
    users.append(table(['name', 'role', 'source', 'drop'], list, cell));
  } catch (error) {
    failed(users, error);
  }
  const name = el('input', { id: 'user-name', placeholder: 'name', autocomplete: 'off' });
  const role = el('select', { id: 'user-role' }, el('option', { value: 'analyst' }, 'analyst'), el('option', { value: 'admin' }, 'admin'));
  const password = el('input', { id: 'user-password', type: 'password', placeholder: 'password (8 or more characters)', autocomplete: 'new-password' });
  const add = el('button', { type: 'button', id: 'user-add' }, 'Add user');
  add.addEventListener('click', async () => {
    try {
      await sql(`CALL create_user(${quote(name.value.trim())}, ${quote(role.value)}, ${quote(password.value)})`);
      showUsers();
    } catch (error) {
      failed(users, error);
    }
  });
  users.append(el('div', { class: 'toolbar' }, name, role, password, add));
  users.append(el('p', { class: 'muted' }, 'Users of the [[query.users]] configuration (and <data>/credentials.json) are changed there; those added here are known to every process within seconds. The audit keeps these calls with their passwords hidden.'));
}

await showUsers();

const orNull = (input) => (input.value.trim() ? quote(input.value.trim()) : 'NULL');

async function showSuppressions() {
  suppressions.replaceChildren();
  try {
    const list = (await json('/api/v1/admin/suppressions')).suppressions;
    const cell = (column, value, row) => {
      if (column !== 'lift') return value === null || value === undefined ? '' : String(value);
      const lift = el('button', { type: 'button', class: 'lift' }, 'Lift');
      lift.addEventListener('click', async () => {
        try {
          await sql(`CALL unsuppress(${quote(row.id)})`);
          showSuppressions();
        } catch (error) {
          failed(suppressions, error);
        }
      });
      return lift;
    };
    const columns = ['id', 'detector', 'function', 'principal', 'until', 'reason', 'added_by', 'added_at', 'lift'];
    suppressions.append(list.length ? table(columns, list, cell) : el('p', { class: 'muted' }, 'None added at run time.'));
  } catch (error) {
    failed(suppressions, error);
  }
  const detector = el('input', { id: 'suppress-detector', placeholder: 'detector prefix (injection.)' });
  const fn = el('input', { id: 'suppress-function', placeholder: 'function' });
  const principal = el('input', { id: 'suppress-principal', placeholder: 'principal' });
  const until = el('input', { id: 'suppress-until', placeholder: 'until (2030-01-01T00:00:00Z)' });
  const reason = el('input', { id: 'suppress-reason', placeholder: 'reason', size: 30 });
  const add = el('button', { type: 'button', id: 'suppress-add' }, 'Suppress');
  add.addEventListener('click', async () => {
    try {
      await sql(`CALL suppress(${orNull(detector)}, ${orNull(fn)}, ${orNull(principal)}, ${orNull(until)}, ${orNull(reason)})`);
      showSuppressions();
    } catch (error) {
      failed(suppressions, error);
    }
  });
  suppressions.append(el('div', { class: 'toolbar' }, detector, fn, principal, until, reason, add));
  suppressions.append(el('p', { class: 'muted' }, 'The configuration\'s [[alerting.suppress]] hold too; every process\'s outbox reads these within seconds.'));
}

await showSuppressions();
try {
  const rows = await sql(`SELECT ts, alert_id, destination, error AS reason FROM alert_deliveries WHERE state = 'suppressed' ORDER BY ts DESC LIMIT 200`);
  suppressed.append(rows.rows.length ? table(['ts', 'alert_id', 'destination', 'reason'], rows.rows) : el('p', { class: 'muted' }, 'Nothing suppressed.'));
} catch (error) {
  failed(suppressed, error);
}
