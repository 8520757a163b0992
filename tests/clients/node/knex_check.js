// knex, the query builder, through pgshroud: the grouped count of
// issue 10 as knex builds it (the LIMIT is a bound parameter) and an
// average. Prints one JSON line per query: the rows as knex returns them,
// the SQL knex sent, and the server's notices, or the error it raised.
//
// usage: node knex_check.js HOST PORT DATABASE USER PASSWORD
'use strict';

const knexFactory = require('knex');

async function main() {
  const [host, port, database, user, password] = process.argv.slice(2);
  const notices = [];
  const knex = knexFactory({
    client: 'pg',
    connection: { host, port: Number(port), database, user, password, ssl: false },
    pool: {
      min: 1,
      max: 1,
      // node-postgres reports NoticeResponse messages as 'notice' events.
      afterCreate(conn, done) {
        conn.on('notice', (msg) => notices.push(msg.message));
        done(null, conn);
      },
    },
  });
  const queries = {
    grouped: () => knex('visits').select('department').count('* as n').groupBy('department').limit(10),
    average: () => knex('visits').avg('cost as avg_cost'),
  };
  try {
    for (const [name, build] of Object.entries(queries)) {
      const query = build();
      const sql = query.toSQL().toNative();
      notices.length = 0;
      try {
        const rows = await query;
        console.log(JSON.stringify({ name, sql, rows, notices: [...notices] }));
      } catch (err) {
        console.log(JSON.stringify({ name, sql, error: { code: err.code, message: err.message, hint: err.hint } }));
      }
    }
  } finally {
    await knex.destroy();
  }
  console.log('done');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
