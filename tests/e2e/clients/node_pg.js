// node-postgres: a parameterised query over TLS (the extended protocol with typed parameters).
// Usage: node node_pg.js PORT PASSWORD SQL PRINCIPAL SINCE; prints the rows as JSON.
const { Client } = require("pg");
const [port, password, sql, principal, since] = process.argv.slice(2);
(async () => {
  const client = new Client({
    host: "127.0.0.1", port: Number(port), user: "admin", password, database: "coldtrail",
    ssl: { rejectUnauthorized: false },
  });
  await client.connect();
  const result = await client.query({ text: sql, values: [principal, new Date(since)], rowMode: "array" });
  await client.end();
  console.log(JSON.stringify(result.rows));
})().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
