// Shared by every page: the session, SQL through the API as the logged-in user (every statement is
// role-checked and audited), and elements built from text. Nothing here parses a value as HTML: stored
// log lines and payloads carry attacks by nature, so every value becomes a text node or an attribute of
// an element this code chose, and links are built from encoded parameters of this console's own pages.

let current = null;

export async function session() {
  if (current) return current;
  const response = await fetch('/api/v1/session', { credentials: 'same-origin' });
  if (response.status === 401) {
    location.assign('/console/login.html');
    throw new Error('not logged in');
  }
  current = await response.json();
  return current;
}

/** Runs one statement; JSON results come back as {columns, rows}, other formats as text. */
export async function sql(text, format = 'json') {
  const { csrf } = await session();
  const response = await fetch('/api/v1/sql?format=' + encodeURIComponent(format), {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'text/plain; charset=utf-8', 'x-csrf-token': csrf },
    body: text,
  });
  if (response.status === 401) {
    location.assign('/console/login.html');
    throw new Error('not logged in');
  }
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).error;
    } catch (_) {
      // not JSON
    }
    throw new Error(message);
  }
  return format === 'json' ? response.json() : response.text();
}

/** A SQL string literal. */
export function quote(text) {
  return "'" + String(text).replaceAll("'", "''") + "'";
}

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A link to one of this console's pages, with encoded parameters. */
export function page(name, params = {}, ...children) {
  const query = new URLSearchParams(params).toString();
  return el('a', { href: '/console/' + name + (query ? '?' + query : '') }, ...children);
}

/** A link to an entity's page. */
export function entityLink(kind, value) {
  return page('entity.html', { kind, value }, el('span', { class: 'kind' }, kind), ' ', value);
}

export function param(name) {
  return new URLSearchParams(location.search).get(name);
}

/** A table of rows (objects) over columns, each cell made by `cell(column, value, row)` or as text. */
export function table(columns, rows, cell = null, rowClass = null) {
  const head = el('tr', {}, columns.map((c) => el('th', {}, c)));
  const body = rows.map((row) =>
    el(
      'tr',
      { class: rowClass ? rowClass(row) : null },
      columns.map((c) => el('td', {}, cell ? cell(c, row[c], row) : text(row[c]))),
    ),
  );
  return el('table', {}, el('thead', {}, head), el('tbody', {}, body));
}

export function text(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

export function severity(value) {
  return el('span', { class: 'severity ' + String(value || 'low').replace(/[^a-z_]/g, '') }, value || '');
}

/** The page's frame: the navigation, the user, and a main element to fill. */
export async function frame(title) {
  const me = await session();
  document.title = title + ' · coldtrail';
  const logout = el('button', { type: 'button', id: 'logout' }, 'Log out');
  logout.addEventListener('click', async () => {
    await fetch('/console/logout', { method: 'POST', headers: { 'x-csrf-token': me.csrf } });
    location.assign('/console/login.html');
  });
  const links = [
    page('', {}, 'Incidents'),
    page('sql.html', {}, 'SQL'),
    page('fleet.html', {}, 'Fleet'),
    me.role === 'admin' ? page('admin.html', {}, 'Admin') : null,
  ];
  const nav = el('nav', {}, el('strong', {}, 'coldtrail'), links, el('span', { class: 'who' }, me.user + ' (' + me.role + ')'), logout);
  const main = el('main', {});
  document.body.replaceChildren(nav, main);
  return { me, main };
}

/** Shows an error in `where` (as text). */
export function failed(where, error) {
  where.append(el('p', { class: 'error' }, String(error && error.message ? error.message : error)));
}

export function parseList(json) {
  try {
    const value = JSON.parse(json || '[]');
    return Array.isArray(value) ? value : [];
  } catch (_) {
    return [];
  }
}
