// Admins only (the server refuses this page and its data to analysts): users and their roles, and the
// suppressed alert deliveries.
import { el, failed, frame, table } from './common.js';

const { main } = await frame('Admin');
main.append(el('h1', {}, 'Admin'));
const users = el('div', { id: 'users' });
const suppressed = el('div', { id: 'suppressed' });
main.append(el('h2', {}, 'Users'), users, el('h2', {}, 'Suppressed deliveries'), suppressed);
try {
  const response = await fetch('/api/v1/admin/users', { credentials: 'same-origin' });
  if (!response.ok) throw new Error((await response.json()).error);
  users.append(table(['name', 'role'], (await response.json()).users));
  users.append(el('p', { class: 'muted' }, 'Users and roles come from the [[query.users]] configuration (and <data>/credentials.json).'));
} catch (error) {
  failed(users, error);
}
try {
  const { sql } = await import('./common.js');
  const rows = await sql(`SELECT ts, alert_id, destination, error AS reason FROM alert_deliveries WHERE state = 'suppressed' ORDER BY ts DESC LIMIT 200`);
  suppressed.append(rows.rows.length ? table(['ts', 'alert_id', 'destination', 'reason'], rows.rows) : el('p', { class: 'muted' }, 'Nothing suppressed.'));
} catch (error) {
  failed(suppressed, error);
}
