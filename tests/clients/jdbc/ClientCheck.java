// End-to-end check of the PostgreSQL JDBC driver (pgjdbc).
//
// Usage: java -cp postgresql.jar:<classes> ClientCheck HOST PORT DBNAME USER PASSWORD
//
// Runs a fixed series of driver features against the given server and prints
// canonical results, one line each, to stdout. Nothing printed depends on the
// connection (no backend PIDs, ports, OIDs of temporary objects or times), so
// the output against PostgreSQL directly and through pgshroud must be equal.
// Exits 0 when every section ran; an unexpected exception prints a stack
// trace to stderr and exits 1.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.io.StringWriter;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PGobject;

public final class ClientCheck {
    private static String host;
    private static String port;
    private static String dbname;
    private static String user;
    private static String password;

    private static final String ITEMS_ALL =
        "SELECT id, name, price, tags, created, payload, doc FROM items ORDER BY id";

    public static void main(String[] args) throws Exception {
        if (args.length != 5) {
            System.err.println("usage: ClientCheck HOST PORT DBNAME USER PASSWORD");
            System.exit(2);
        }
        host = args[0];
        port = args[1];
        dbname = args[2];
        user = args[3];
        password = args[4];
        try {
            metadata();
            plainStatement();
            preparedStatements("default", "");
            preparedStatements("threshold1", "prepareThreshold=1");
            itemTypes("text", "prepareThreshold=0&binaryTransfer=false", false);
            itemTypes("binary", "prepareThreshold=-1&binaryTransfer=true", true);
            fetchSize();
            batchInsert();
            transactionRollback();
            errorRecovery();
            copyOutAndIn();
            notices();
        } catch (Exception e) {
            System.out.flush();
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("done");
        System.out.flush();
    }

    // ---------------------------------------------------------------- helpers

    private static Connection connect(String extra) throws SQLException {
        String url = "jdbc:postgresql://" + host + ":" + port + "/" + dbname;
        if (extra != null && !extra.isEmpty()) {
            url += "?" + extra;
        }
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        props.setProperty("ApplicationName", "pgshroud-jdbc-check");
        props.setProperty("connectTimeout", "20");
        props.setProperty("socketTimeout", "120");
        return DriverManager.getConnection(url, props);
    }

    private static void out(String section, String line) {
        System.out.println(section + " " + line);
    }

    private static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder(b.length * 2);
        for (byte x : b) {
            sb.append(String.format("%02x", x & 0xff));
        }
        return sb.toString();
    }

    private static String sha256(byte[] data) throws Exception {
        return hex(MessageDigest.getInstance("SHA-256").digest(data));
    }

    private static String quote(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        return sb.append('"').toString();
    }

    /** A canonical, type-tagged text for a value returned by getObject. */
    private static String canon(Object v) throws SQLException {
        if (v == null) {
            return "null";
        }
        if (v instanceof BigDecimal) {
            return "dec:" + ((BigDecimal) v).toPlainString();
        }
        if (v instanceof Integer || v instanceof Long || v instanceof Short) {
            return "int:" + v;
        }
        if (v instanceof String) {
            return "str:" + quote((String) v);
        }
        if (v instanceof byte[]) {
            return "bytes:" + hex((byte[]) v);
        }
        if (v instanceof java.sql.Date) {
            return "date:" + v;
        }
        if (v instanceof Array) {
            Array a = (Array) v;
            Object[] elems = (Object[]) a.getArray();
            List<String> parts = new ArrayList<>();
            for (Object e : elems) {
                parts.add(canon(e));
            }
            return "array<" + a.getBaseTypeName() + ">" + parts;
        }
        if (v instanceof PGobject) {
            PGobject o = (PGobject) v;
            return "pgobject<" + o.getType() + ">:" + quote(o.getValue());
        }
        if (v instanceof Boolean) {
            return "bool:" + v;
        }
        return v.getClass().getSimpleName() + ":" + quote(v.toString());
    }

    private static String row(ResultSet rs, boolean viaGetString) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        StringBuilder sb = new StringBuilder();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            if (i > 1) {
                sb.append(" | ");
            }
            if (viaGetString && "bytea".equals(md.getColumnTypeName(i))) {
                // getString on a binary-transferred bytea gives byte[].toString()
                // (an identity hash), so read the bytes themselves.
                byte[] b = rs.getBytes(i);
                sb.append(b == null ? "null" : "hex:" + hex(b));
            } else if (viaGetString) {
                sb.append(quote(rs.getString(i)));
            } else {
                sb.append(canon(rs.getObject(i)));
            }
        }
        return sb.toString();
    }

    private static String columns(ResultSetMetaData md) throws SQLException {
        List<String> cols = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            cols.add(md.getColumnLabel(i) + ":" + md.getColumnTypeName(i) + ":" + md.getColumnType(i)
                     + ":" + md.getColumnClassName(i));
        }
        return String.join(", ", cols);
    }

    private static String scalar(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    // --------------------------------------------------------------- sections

    private static void metadata() throws Exception {
        String s = "meta";
        try (Connection c = connect("")) {
            DatabaseMetaData md = c.getMetaData();
            out(s, "product " + md.getDatabaseProductName() + " major " + md.getDatabaseMajorVersion());
            out(s, "driver " + md.getDriverName() + " " + md.getDriverMajorVersion());
            out(s, "user " + md.getUserName());
            try (ResultSet rs = md.getTables(null, "public", "items", new String[] {"TABLE"})) {
                while (rs.next()) {
                    out(s, "table " + rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME")
                        + " " + rs.getString("TABLE_TYPE"));
                }
            }
            try (ResultSet rs = md.getColumns(null, "public", "items", null)) {
                while (rs.next()) {
                    out(s, "column " + rs.getInt("ORDINAL_POSITION") + " " + rs.getString("COLUMN_NAME")
                        + " type=" + rs.getString("TYPE_NAME") + " jdbc=" + rs.getInt("DATA_TYPE")
                        + " size=" + rs.getInt("COLUMN_SIZE") + " digits=" + rs.getInt("DECIMAL_DIGITS")
                        + " nullable=" + rs.getInt("NULLABLE") + " default=" + quote(rs.getString("COLUMN_DEF")));
                }
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "items")) {
                while (rs.next()) {
                    out(s, "pk " + rs.getString("COLUMN_NAME") + " seq=" + rs.getInt("KEY_SEQ"));
                }
            }
        }
    }

    private static void plainStatement() throws Exception {
        String s = "plain";
        try (Connection c = connect(""); Statement st = c.createStatement()) {
            try (ResultSet rs = st.executeQuery(
                    "SELECT count(*), sum(price), min(id), max(id), count(name), count(tags), count(doc) FROM items")) {
                out(s, "columns " + columns(rs.getMetaData()));
                while (rs.next()) {
                    out(s, "row " + row(rs, false));
                }
            }
            // One simple-protocol message carrying several statements.
            boolean isResult = st.execute("SELECT 1 AS a; SELECT 'two'::text AS b; SELECT 3.5::numeric AS c");
            int n = 0;
            while (true) {
                if (isResult) {
                    try (ResultSet rs = st.getResultSet()) {
                        while (rs.next()) {
                            out(s, "multi " + n + " " + rs.getMetaData().getColumnLabel(1) + "=" + row(rs, false));
                        }
                    }
                } else if (st.getUpdateCount() == -1) {
                    break;
                }
                n++;
                isResult = st.getMoreResults();
            }
            out(s, "server_version_num>=" + (Integer.parseInt(scalar(c, "SHOW server_version_num")) >= 100000));
            out(s, "encoding " + scalar(c, "SHOW client_encoding"));
        }
    }

    private static void preparedStatements(String tag, String extra) throws Exception {
        String s = "prepared." + tag;
        try (Connection c = connect(extra);
             PreparedStatement ps = c.prepareStatement("SELECT id, name, price FROM items WHERE id = ?")) {
            // Run past the driver's prepareThreshold (5 by default) so that the
            // statement is switched to a named server-side prepared statement.
            for (int i = 1; i <= 10; i++) {
                ps.setInt(1, i * 7);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        out(s, "exec " + i + " " + row(rs, false));
                    }
                }
            }
            // The statement now lives on the server under a driver-chosen name.
            out(s, "server_prepared " + scalar(c,
                "SELECT count(*) > 0 FROM pg_prepared_statements "
                + "WHERE statement ILIKE '%FROM items WHERE id = $1%' AND NOT from_sql"));
            // A second statement with several parameter types and a NULL.
            try (PreparedStatement p2 = c.prepareStatement(
                    "SELECT count(*), coalesce(sum(price), 0) FROM items "
                    + "WHERE id BETWEEN ? AND ? AND (name LIKE ? OR ?::text IS NULL) AND price > ?")) {
                for (int i = 0; i < 8; i++) {
                    p2.setInt(1, i * 50);
                    p2.setLong(2, i * 50 + 60L);
                    p2.setString(3, "item 1%");
                    if (i % 2 == 0) {
                        p2.setNull(4, java.sql.Types.VARCHAR);
                    } else {
                        p2.setString(4, "x");
                    }
                    p2.setBigDecimal(5, new BigDecimal("10.50"));
                    try (ResultSet rs = p2.executeQuery()) {
                        while (rs.next()) {
                            out(s, "filter " + i + " " + row(rs, false));
                        }
                    }
                }
            }
        }
    }

    private static void itemTypes(String tag, String extra, boolean prepared) throws Exception {
        String s = "types." + tag;
        try (Connection c = connect(extra)) {
            for (int pass = 0; pass < 2; pass++) {
                ResultSet rs;
                Statement st;
                if (prepared) {
                    PreparedStatement ps = c.prepareStatement(ITEMS_ALL + " LIMIT ?");
                    ps.setInt(1, 100000);
                    st = ps;
                    rs = ps.executeQuery();
                } else {
                    st = c.createStatement();
                    rs = st.executeQuery(ITEMS_ALL);
                }
                try {
                    if (pass == 0) {
                        out(s, "columns " + columns(rs.getMetaData()));
                    }
                    int n = 0;
                    while (rs.next()) {
                        n++;
                        out(s, (pass == 0 ? "obj " : "str ") + row(rs, pass == 1));
                    }
                    out(s, "rows " + n);
                } finally {
                    rs.close();
                    st.close();
                }
            }
            // Typed getters on a few rows.
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery(ITEMS_ALL + " LIMIT 5")) {
                while (rs.next()) {
                    BigDecimal price = rs.getBigDecimal("price");
                    java.sql.Date created = rs.getDate("created");
                    byte[] payload = rs.getBytes("payload");
                    out(s, "typed " + rs.getInt("id") + " " + (price == null ? "null" : price.toPlainString())
                        + " " + created + " " + (payload == null ? "null" : hex(payload)));
                }
            }
        }
    }

    private static void fetchSize() throws Exception {
        String s = "fetch";
        try (Connection c = connect("")) {
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(37);
                try (ResultSet rs = st.executeQuery("SELECT id, name FROM items ORDER BY id")) {
                    long n = 0;
                    long sum = 0;
                    StringBuilder names = new StringBuilder();
                    while (rs.next()) {
                        n++;
                        sum += rs.getInt(1);
                        names.append(rs.getString(2)).append('\n');
                    }
                    out(s, "statement rows=" + n + " idsum=" + sum
                        + " names=" + sha256(names.toString().getBytes(StandardCharsets.UTF_8)));
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, price FROM items WHERE id > ? ORDER BY id DESC")) {
                ps.setFetchSize(10);
                for (int round = 0; round < 6; round++) {
                    ps.setInt(1, round * 20);
                    try (ResultSet rs = ps.executeQuery()) {
                        int n = 0;
                        String first = null;
                        String last = null;
                        while (rs.next()) {
                            n++;
                            String r = row(rs, false);
                            if (first == null) {
                                first = r;
                            }
                            last = r;
                            // Leave a suspended portal behind every other round.
                            if (round % 2 == 1 && n == 15) {
                                break;
                            }
                        }
                        out(s, "prepared round=" + round + " rows=" + n + " first=" + first + " last=" + last);
                    }
                }
            }
            out(s, "in_txn_count " + scalar(c, "SELECT count(*) FROM items"));
            c.commit();
        }
    }

    private static void batchInsert() throws Exception {
        String s = "batch";
        for (String extra : new String[] {"", "reWriteBatchedInserts=true"}) {
            String tag = extra.isEmpty() ? "plain" : "rewritten";
            try (Connection c = connect(extra)) {
                try (Statement st = c.createStatement()) {
                    st.execute("CREATE TEMP TABLE t_batch (id int, label text, amount numeric(10,2), flags text[])");
                }
                try (PreparedStatement ps = c.prepareStatement(
                        "INSERT INTO t_batch (id, label, amount, flags) VALUES (?, ?, ?, ?)")) {
                    for (int i = 1; i <= 120; i++) {
                        ps.setInt(1, i);
                        ps.setString(2, i % 9 == 0 ? null : "label-" + i + (i % 4 == 0 ? " ü" : ""));
                        ps.setBigDecimal(3, new BigDecimal(i).movePointLeft(2).add(new BigDecimal("0.5")));
                        ps.setArray(4, c.createArrayOf("text", new Object[] {"f" + (i % 3), null}));
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    long total = 0;
                    for (int n : counts) {
                        total += (n == Statement.SUCCESS_NO_INFO) ? 1 : n;
                    }
                    out(s, tag + " inserted=" + total);
                }
                try (Statement st = c.createStatement();
                     ResultSet rs = st.executeQuery("SELECT * FROM t_batch ORDER BY id")) {
                    while (rs.next()) {
                        out(s, tag + " row " + row(rs, false));
                    }
                }
                try (Statement st = c.createStatement()) {
                    st.addBatch("UPDATE t_batch SET amount = amount * 2 WHERE id <= 10");
                    st.addBatch("DELETE FROM t_batch WHERE id > 100");
                    st.addBatch("INSERT INTO t_batch (id) VALUES (1000)");
                    out(s, tag + " statement_batch=" + Arrays.toString(st.executeBatch()));
                    out(s, tag + " after " + scalar(c, "SELECT count(*) || '/' || sum(amount) FROM t_batch"));
                }
            }
        }
    }

    private static void transactionRollback() throws Exception {
        String s = "txn";
        try (Connection c = connect("")) {
            String before = scalar(c, "SELECT md5(string_agg(name, ',' ORDER BY id)) FROM items WHERE id <= 20");
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                out(s, "updated " + st.executeUpdate("UPDATE items SET name = 'changed' WHERE id <= 20"));
                out(s, "inside " + scalar(c, "SELECT count(*) FROM items WHERE name = 'changed'"));
                Savepoint sp = c.setSavepoint("sp1");
                st.executeUpdate("DELETE FROM items WHERE id <= 20");
                out(s, "after_delete " + scalar(c, "SELECT count(*) FROM items WHERE id <= 20"));
                c.rollback(sp);
                out(s, "after_savepoint_rollback " + scalar(c, "SELECT count(*) FROM items WHERE id <= 20"));
                out(s, "txid_active " + scalar(c, "SELECT txid_current_if_assigned() IS NOT NULL"));
            }
            c.rollback();
            c.setAutoCommit(true);
            String after = scalar(c, "SELECT md5(string_agg(name, ',' ORDER BY id)) FROM items WHERE id <= 20");
            out(s, "restored " + before.equals(after));
            out(s, "changed_left " + scalar(c, "SELECT count(*) FROM items WHERE name = 'changed'"));
        }
    }

    private static void errorRecovery() throws Exception {
        String s = "error";
        try (Connection c = connect("")) {
            try (Statement st = c.createStatement()) {
                try {
                    st.executeQuery("SELECT 1 / 0");
                    out(s, "simple no error");
                } catch (SQLException e) {
                    out(s, "simple sqlstate=" + e.getSQLState() + " message=" + quote(e.getMessage()));
                }
                out(s, "simple recovered " + scalar(c, "SELECT count(*) FROM items"));
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT 100 / ? AS q")) {
                for (int d : new int[] {5, 0, 4, 0, 2, 1, 0, 10}) {
                    ps.setInt(1, d);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        out(s, "prepared " + d + " -> " + rs.getInt(1));
                    } catch (SQLException e) {
                        out(s, "prepared " + d + " sqlstate=" + e.getSQLState());
                    }
                }
            }
            // An error inside a transaction block aborts it until rollback.
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.executeQuery("SELECT 1").close();
                try {
                    st.executeQuery("SELECT * FROM no_such_table");
                } catch (SQLException e) {
                    out(s, "txn sqlstate=" + e.getSQLState() + " message=" + quote(e.getMessage()));
                }
                try {
                    st.executeQuery("SELECT 1");
                } catch (SQLException e) {
                    out(s, "txn aborted sqlstate=" + e.getSQLState());
                }
                c.rollback();
                out(s, "txn recovered " + scalar(c, "SELECT 'ok'"));
                c.commit();
            }
            c.setAutoCommit(true);
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int")) {
                ps.setString(1, "not a number");
                ps.executeQuery();
            } catch (SQLException e) {
                out(s, "bind sqlstate=" + e.getSQLState());
            }
            out(s, "final " + scalar(c, "SELECT sum(id) FROM items"));
        }
    }

    private static void copyOutAndIn() throws Exception {
        String s = "copy";
        try (Connection c = connect("")) {
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            StringWriter csv = new StringWriter();
            long n = cm.copyOut(
                "COPY (SELECT id, name, price, tags, created, payload, doc FROM items ORDER BY id) "
                + "TO STDOUT WITH (FORMAT csv, HEADER true)", csv);
            String text = csv.toString();
            String[] lines = text.split("\n", -1);
            out(s, "out_csv rows=" + n + " bytes=" + text.getBytes(StandardCharsets.UTF_8).length
                + " sha256=" + sha256(text.getBytes(StandardCharsets.UTF_8)));
            for (int i = 0; i < Math.min(4, lines.length); i++) {
                out(s, "out_csv line " + quote(lines[i]));
            }
            ByteArrayOutputStream bin = new ByteArrayOutputStream();
            long nb = cm.copyOut("COPY items TO STDOUT WITH (FORMAT binary)", bin);
            out(s, "out_binary rows=" + nb + " bytes=" + bin.size() + " sha256=" + sha256(bin.toByteArray()));

            try (Statement st = c.createStatement()) {
                st.execute("CREATE TEMP TABLE t_copy (LIKE items)");
            }
            long in = cm.copyIn("COPY t_copy FROM STDIN WITH (FORMAT csv, HEADER true)", new StringReader(text));
            out(s, "in_csv rows=" + in);
            out(s, "in_csv same " + scalar(c,
                "SELECT count(*) FROM ((TABLE items EXCEPT TABLE t_copy) UNION ALL (TABLE t_copy EXCEPT TABLE items)) d"));
            long inb = cm.copyIn("COPY t_copy FROM STDIN WITH (FORMAT binary)",
                                 new ByteArrayInputStream(bin.toByteArray()));
            out(s, "in_binary rows=" + inb);
            out(s, "in_binary total " + scalar(c, "SELECT count(*) FROM t_copy"));
            // A failing COPY IN leaves the connection usable.
            try {
                cm.copyIn("COPY t_copy (id) FROM STDIN", new StringReader("1\nnot-an-int\n"));
            } catch (SQLException e) {
                out(s, "in_bad sqlstate=" + e.getSQLState());
            }
            out(s, "after_bad " + scalar(c, "SELECT count(*) FROM t_copy"));
        }
    }

    private static void notices() throws Exception {
        String s = "notice";
        try (Connection c = connect(""); Statement st = c.createStatement()) {
            st.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$");
            Map<Integer, String> seen = new TreeMap<>();
            int i = 0;
            for (SQLWarning w = st.getWarnings(); w != null; w = w.getNextWarning()) {
                seen.put(i++, w.getSQLState() + " " + quote(w.getMessage()));
            }
            for (Map.Entry<Integer, String> e : seen.entrySet()) {
                out(s, "warning " + e.getKey() + " " + e.getValue());
            }
            st.execute("SET application_name = 'changed-by-check'");
            out(s, "application_name " + scalar(c, "SHOW application_name"));
        }
    }
}
