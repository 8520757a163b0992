// pgjdbc's DatabaseMetaData, as JDBC tools (DBeaver, DataGrip, Metabase's
// JDBC-based sync before its own catalog queries) call it to browse a database.
//
// Usage: java -cp postgresql.jar:<classes> JdbcMetadata HOST PORT DBNAME USER PASSWORD [catalog-only]
// (or, uncompiled: java -cp postgresql.jar JdbcMetadata.java ...)
//
// With catalog-only it leaves out the one call that reads a data table
// (ResultSetMetaData of a query on patients).
// Prints one block per call: "== name", then the rows as tab-separated values
// (columns in result order), or "ERROR sqlstate: message" when the call fails.
// Nothing printed depends on the connection, so the output for a user through
// pgshroud can be compared with the output for another user directly.
// Exits 0 when every call succeeded, 1 otherwise.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public final class JdbcMetadata {
    interface Call {
        ResultSet run(DatabaseMetaData md) throws SQLException;
    }

    private static int failures = 0;

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[2];
        Properties props = new Properties();
        props.setProperty("user", args[3]);
        props.setProperty("password", args[4]);
        props.setProperty("sslmode", "disable");
        props.setProperty("ApplicationName", "JdbcMetadata");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("== product");
            System.out.println(md.getDatabaseProductName() + "\t" + md.getDatabaseMajorVersion());
            call(md, "getCatalogs", m -> m.getCatalogs());
            call(md, "getSchemas", m -> m.getSchemas());
            call(md, "getSchemas(public)", m -> m.getSchemas(null, "public"));
            call(md, "getTableTypes", m -> m.getTableTypes());
            call(md, "getTables(public)", m -> m.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"}));
            call(md, "getTables(all)", m -> m.getTables(null, null, "pat%", null));
            for (String table : new String[] {"patients", "visits", "labs", "diagnoses"}) {
                call(md, "getColumns(" + table + ")", m -> m.getColumns(null, "public", table, "%"));
                call(md, "getPrimaryKeys(" + table + ")", m -> m.getPrimaryKeys(null, "public", table));
                call(md, "getImportedKeys(" + table + ")", m -> m.getImportedKeys(null, "public", table));
                call(md, "getExportedKeys(" + table + ")", m -> m.getExportedKeys(null, "public", table));
                call(md, "getIndexInfo(" + table + ")", m -> m.getIndexInfo(null, "public", table, false, true));
                call(md, "getBestRowIdentifier(" + table + ")",
                     m -> m.getBestRowIdentifier(null, "public", table, DatabaseMetaData.bestRowSession, true));
            }
            call(md, "getTablePrivileges(public)", m -> m.getTablePrivileges(null, "public", "%"));
            call(md, "getColumnPrivileges(patients)", m -> m.getColumnPrivileges(null, "public", "patients", "%"));
            call(md, "getProcedures(public)", m -> m.getProcedures(null, "public", "%"));
            call(md, "getFunctions(pg_catalog.lower)", m -> m.getFunctions(null, "pg_catalog", "lower"));
            call(md, "getFunctionColumns(pg_catalog.lower)", m -> m.getFunctionColumns(null, "pg_catalog", "lower", "%"));
            call(md, "getUDTs(public)", m -> m.getUDTs(null, "public", "%", null));
            call(md, "getTypeInfo", m -> m.getTypeInfo());
            if (args.length > 5 && args[5].equals("catalog-only")) {
                System.exit(failures == 0 ? 0 : 1);
            }
            // ResultSetMetaData of a query: pgjdbc reads pg_attribute for nullability and
            // auto-increment of each column's source table.
            System.out.println("== ResultSetMetaData(patients)");
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT patient_id, name, birth_date FROM patients WHERE false")) {
                ResultSetMetaData rsmd = ps.executeQuery().getMetaData();
                for (int i = 1; i <= rsmd.getColumnCount(); i++) {
                    System.out.println(rsmd.getColumnName(i) + "\t" + rsmd.getColumnTypeName(i) + "\t"
                        + rsmd.isNullable(i) + "\t" + rsmd.isAutoIncrement(i));
                }
            } catch (SQLException e) {
                fail(e);
            }
        }
        System.exit(failures == 0 ? 0 : 1);
    }

    private static void call(DatabaseMetaData md, String name, Call call) {
        System.out.println("== " + name);
        try (ResultSet rs = call.run(md)) {
            ResultSetMetaData meta = rs.getMetaData();
            List<String> rows = new ArrayList<>();
            while (rs.next()) {
                StringBuilder row = new StringBuilder();
                for (int i = 1; i <= meta.getColumnCount(); i++) {
                    if (i > 1) {
                        row.append('\t');
                    }
                    row.append(rs.getString(i));
                }
                rows.add(row.toString());
            }
            System.out.println("rows: " + rows.size());
            for (String row : rows) {
                System.out.println(row);
            }
        } catch (SQLException e) {
            fail(e);
        }
    }

    private static void fail(SQLException e) {
        failures++;
        System.out.println("ERROR " + e.getSQLState() + ": " + e.getMessage().split("\n")[0]);
    }
}
