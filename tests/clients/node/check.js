#!/usr/bin/env node
// End-to-end check of node-postgres (pg) and pg-cursor.
//
// Usage: node check.js HOST PORT DBNAME USER PASSWORD
//
// Runs a fixed series of client features and prints canonical results, one
// line each, to stdout. Nothing printed depends on the connection (no backend
// PIDs, ports or times), so the output against PostgreSQL directly and through
// pgshroud must be equal. Exits 0 when every section ran, 1 otherwise.
'use strict';

const crypto = require('crypto');
const { Client, types } = require('pg');
const Cursor = require('pg-cursor');

// Keep dates as the server's text so that output does not depend on the
// machine's time zone (1082 = date).
types.setTypeParser(1082, (v) => v);

const [host, port, database, user, password] = process.argv.slice(2);
if (!password && password !== '') {
  process.stderr.write('usage: node check.js HOST PORT DBNAME USER PASSWORD\n');
  process.exit(2);
}

const ITEMS_ALL = 'SELECT id, name, price, tags, created, payload, doc FROM items ORDER BY id';

function out(section, line) {
  process.stdout.write(`${section} ${line}\n`);
}

// Canonical, type-tagged JSON-like text for a value node-postgres returned.
function canon(v) {
  if (v === null || v === undefined) return 'null';
  if (Buffer.isBuffer(v)) return `bytes:${v.toString('hex')}`;
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v instanceof Date) return `date:${v.toISOString()}`;
  if (typeof v === 'object') return `json:${JSON.stringify(v)}`;
  return `${typeof v}:${JSON.stringify(v)}`;
}

function row(r) {
  if (Array.isArray(r)) return r.map(canon).join(' | ');
  return Object.keys(r).map((k) => `${k}=${canon(r[k])}`).join(' | ');
}

function fields(res) {
  return res.fields
    .map((f) => `${f.name}:${f.dataTypeID}:${f.dataTypeSize}:${f.dataTypeModifier}:${f.format}`)
    .join(', ');
}

function sha256(text) {
  return crypto.createHash('sha256').update(text).digest('hex');
}

async function connect() {
  const client = new Client({
    host,
    port: Number(port),
    database,
    user,
    password,
    application_name: 'pgshroud-node-check',
    connectionTimeoutMillis: 20000,
    query_timeout: 120000,
  });
  await client.connect();
  return client;
}

async function expectError(section, label, fn) {
  try {
    await fn();
    out(section, `${label} no error`);
  } catch (e) {
    if (!e.code) throw e;
    out(section, `${label} code=${e.code} severity=${e.severity} message=${JSON.stringify(e.message)}`);
  }
}

async function simpleQueries(c) {
  const s = 'simple';
  const r = await c.query(
    'SELECT count(*) AS n, sum(price) AS total, min(id) AS lo, max(id) AS hi, count(doc) AS docs FROM items');
  out(s, `fields ${fields(r)}`);
  out(s, `command=${r.command} rowCount=${r.rowCount} row ${row(r.rows[0])}`);
  // Several statements in one Query message give one result each.
  const multi = await c.query("SELECT 1 AS a; SELECT 'two'::text AS b, 2.5::numeric AS c; SET search_path TO public");
  multi.forEach((m, i) => out(s, `multi ${i} command=${m.command} rows=${JSON.stringify(m.rows)}`));
  const empty = await c.query('SELECT id FROM items WHERE false');
  out(s, `empty rowCount=${empty.rowCount} fields ${fields(empty)}`);
  const arr = await c.query({ text: 'SELECT id, name FROM items ORDER BY id LIMIT 3', rowMode: 'array' });
  arr.rows.forEach((x) => out(s, `array_mode ${row(x)}`));
  const ver = await c.query('SHOW server_version_num');
  out(s, `server_version_num>=100000 ${Number(ver.rows[0].server_version_num) >= 100000}`);
  const enc = await c.query('SHOW client_encoding');
  out(s, `client_encoding ${enc.rows[0].client_encoding}`);
}

async function parameterized(c) {
  const s = 'params';
  for (const id of [1, 2, 17, 250, 499, 100000]) {
    const r = await c.query('SELECT id, name, price FROM items WHERE id = $1', [id]);
    out(s, `by_id ${id} rowCount=${r.rowCount} ${r.rows.map(row).join(' ; ')}`);
  }
  const r = await c.query(
    'SELECT $1::int AS i, $2::text AS t, $3::numeric AS n, $4::text[] AS a, $5::bytea AS b, $6::jsonb AS j, '
    + '$7::date AS d, $8::bool AS f, $9::text AS nul',
    [42, "it's \"quoted\" ü", '12345.678', ['x', null, 'y z'], Buffer.from([0, 1, 254, 255]),
      { k: [1, 'two', null] }, '2024-02-29', true, null]);
  out(s, `fields ${fields(r)}`);
  out(s, `roundtrip ${row(r.rows[0])}`);
  const filt = await c.query(
    'SELECT count(*) AS n, coalesce(sum(price), 0) AS s FROM items WHERE id BETWEEN $1 AND $2 AND name LIKE $3',
    [10, 300, 'item 1%']);
  out(s, `filter ${row(filt.rows[0])}`);
  const upd = await c.query('CREATE TEMP TABLE t_params (id int, label text)');
  out(s, `create command=${upd.command}`);
  const ins = await c.query(
    'INSERT INTO t_params SELECT g, $1 || g FROM generate_series(1, $2::int) g', ['label-', 25]);
  out(s, `insert command=${ins.command} rowCount=${ins.rowCount}`);
  const del = await c.query('DELETE FROM t_params WHERE id > $1', [20]);
  out(s, `delete command=${del.command} rowCount=${del.rowCount}`);
}

async function namedStatements(c) {
  const s = 'named';
  for (let i = 1; i <= 8; i++) {
    const r = await c.query({
      name: 'item-by-id',
      text: 'SELECT id, name, price, tags FROM items WHERE id = $1',
      values: [i * 11],
    });
    out(s, `item-by-id ${i} ${r.rows.map(row).join(' ; ')}`);
  }
  for (let i = 0; i < 4; i++) {
    const r = await c.query({
      name: 'count-range',
      text: 'SELECT count(*)::int AS n FROM items WHERE id > $1 AND id <= $2',
      values: [i * 100, i * 100 + 150],
    });
    out(s, `count-range ${i} ${row(r.rows[0])}`);
  }
  const ps = await c.query(
    "SELECT name FROM pg_prepared_statements WHERE NOT from_sql AND statement ILIKE '%FROM items WHERE id = $1%'");
  out(s, `server_prepared ${ps.rowCount > 0}`);
  // SQL-level PREPARE/EXECUTE through the simple protocol.
  await c.query('PREPARE by_name (text) AS SELECT count(*)::int AS n FROM items WHERE name = $1');
  const ex = await c.query("EXECUTE by_name('item 3')");
  out(s, `sql_execute ${row(ex.rows[0])}`);
  await c.query('DEALLOCATE by_name');
}

async function itemTypes(c) {
  const s = 'types';
  const r = await c.query(ITEMS_ALL);
  out(s, `fields ${fields(r)}`);
  out(s, `rowCount ${r.rowCount}`);
  r.rows.forEach((x) => out(s, `row ${row(x)}`));
  const p = await c.query(`${ITEMS_ALL} LIMIT $1`, [100000]);
  out(s, `extended rowCount=${p.rowCount} same=${JSON.stringify(p.rows) === JSON.stringify(r.rows)}`);
  const nonText = await c.query(
    "SELECT 1::int2 AS a, 2::int8 AS b, 1.5::float8 AS c, true AS d, 'ab'::bytea AS e, "
    + "'1 day'::interval AS f, '{1,2,NULL}'::int[] AS g, '00000000-0000-0000-0000-000000000001'::uuid AS h");
  out(s, `misc fields ${fields(nonText)}`);
  out(s, `misc ${row(nonText.rows[0])}`);
}

async function cursors(c) {
  const s = 'cursor';
  await c.query('BEGIN');
  const cursor = c.query(new Cursor('SELECT id, name FROM items WHERE id > $1 ORDER BY id', [0]));
  let total = 0;
  let batches = 0;
  let idsum = 0;
  const names = [];
  for (;;) {
    // Each read sends Execute with a row limit; the portal stays suspended in between.
    const rows = await cursor.read(64);
    if (rows.length === 0) break;
    batches += 1;
    total += rows.length;
    rows.forEach((x) => {
      idsum += x.id;
      names.push(x.name);
    });
  }
  await cursor.close();
  out(s, `rows=${total} batches=${batches} idsum=${idsum} names=${sha256(names.join('\n'))}`);
  // Close a cursor before it is exhausted.
  const partial = c.query(new Cursor('SELECT id FROM items ORDER BY id DESC'));
  const first = await partial.read(7);
  await partial.close();
  out(s, `partial ${first.map((x) => x.id).join(',')}`);
  const after = await c.query('SELECT count(*)::int AS n FROM items');
  out(s, `after ${row(after.rows[0])}`);
  await c.query('COMMIT');
  // A LIMIT/OFFSET loop outside a transaction.
  let offset = 0;
  let pages = 0;
  let seen = 0;
  for (;;) {
    const page = await c.query('SELECT id FROM items ORDER BY id LIMIT $1 OFFSET $2', [90, offset]);
    if (page.rowCount === 0) break;
    pages += 1;
    seen += page.rowCount;
    offset += page.rowCount;
  }
  out(s, `limit_loop pages=${pages} rows=${seen}`);
}

async function transaction(c) {
  const s = 'txn';
  const digest = "SELECT md5(string_agg(coalesce(name, '-'), ',' ORDER BY id)) AS h FROM items WHERE id <= 30";
  const before = (await c.query(digest)).rows[0].h;
  await c.query('BEGIN');
  const upd = await c.query("UPDATE items SET name = 'changed' WHERE id <= $1", [30]);
  out(s, `update rowCount=${upd.rowCount}`);
  out(s, `inside ${row((await c.query("SELECT count(*)::int AS n FROM items WHERE name = 'changed'")).rows[0])}`);
  await c.query('SAVEPOINT sp');
  await c.query('DELETE FROM items WHERE id <= 30');
  out(s, `after_delete ${row((await c.query('SELECT count(*)::int AS n FROM items WHERE id <= 30')).rows[0])}`);
  await c.query('ROLLBACK TO SAVEPOINT sp');
  out(s, `after_savepoint ${row((await c.query('SELECT count(*)::int AS n FROM items WHERE id <= 30')).rows[0])}`);
  await c.query('ROLLBACK');
  const after = (await c.query(digest)).rows[0].h;
  out(s, `restored ${before === after}`);
  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  out(s, `isolation ${(await c.query('SHOW transaction_isolation')).rows[0].transaction_isolation}`);
  await expectError(s, 'read_only', () => c.query('CREATE TEMP TABLE t_ro (x int)'));
  await c.query('ROLLBACK');
}

async function errors(c) {
  const s = 'error';
  await expectError(s, 'simple', () => c.query('SELECT 1 / 0'));
  out(s, `simple recovered ${row((await c.query('SELECT count(*)::int AS n FROM items')).rows[0])}`);
  await expectError(s, 'extended', () => c.query('SELECT 100 / $1::int AS q', [0]));
  out(s, `extended recovered ${row((await c.query('SELECT 100 / $1::int AS q', [4])).rows[0])}`);
  await expectError(s, 'bind', () => c.query('SELECT $1::int AS q', ['not a number']));
  await expectError(s, 'parse', () => c.query('SELEC oops'));
  await expectError(s, 'named', () => c.query({ name: 'div', text: 'SELECT 10 / $1::int AS q', values: [0] }));
  out(s, `named reuse ${row((await c.query({ name: 'div', text: 'SELECT 10 / $1::int AS q', values: [5] })).rows[0])}`);
  await c.query('BEGIN');
  await expectError(s, 'txn', () => c.query('SELECT * FROM no_such_table'));
  await expectError(s, 'txn aborted', () => c.query('SELECT 1'));
  await c.query('ROLLBACK');
  out(s, `txn recovered ${row((await c.query("SELECT 'ok' AS status")).rows[0])}`);
  // A failing statement in the middle of a multi-statement simple query.
  await expectError(s, 'multi', () => c.query('SELECT 1; SELECT 1 / 0; SELECT 3'));
  out(s, `final ${row((await c.query('SELECT sum(id)::int AS s FROM items')).rows[0])}`);
}

async function notices(c) {
  const s = 'notice';
  const seen = [];
  const onNotice = (n) => seen.push(`${n.severity} ${n.code} ${JSON.stringify(n.message)}`);
  c.on('notice', onNotice);
  await c.query("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$");
  c.removeListener('notice', onNotice);
  seen.forEach((n, i) => out(s, `notice ${i} ${n}`));
  await c.query("SET application_name = 'changed-by-check'");
  out(s, `application_name ${(await c.query('SHOW application_name')).rows[0].application_name}`);
}

async function main() {
  const sections = [simpleQueries, parameterized, namedStatements, itemTypes, cursors, transaction, errors, notices];
  for (const section of sections) {
    // A fresh connection per section, so one section's failure cannot hide in another.
    const c = await connect();
    try {
      await section(c);
    } finally {
      await c.end();
    }
  }
  out('done', 'ok');
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  },
);
