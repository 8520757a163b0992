import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.util.Properties;

/**
 * pgjdbc reading an answer a few rows at a time: with autocommit off and a
 * fetch size, pgjdbc executes the portal with a row limit (Execute with
 * max rows) and asks for more until PortalSuspended stops coming.
 *
 * usage: java FetchSizeCheck HOST PORT DATABASE USER PASSWORD FETCH_SIZE SQL
 *
 * Prints "column\tNAME\tTYPE" for each column, "row\tV1\tV2..." for each
 * row, "notice\tMESSAGE" for each notice, then "done"; an error is printed
 * as "error\tSQLSTATE\tMESSAGE" and exits with status 2.
 */
public final class FetchSizeCheck {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[2];
        Properties props = new Properties();
        props.setProperty("user", args[3]);
        props.setProperty("password", args[4]);
        props.setProperty("sslmode", "disable");
        int fetchSize = Integer.parseInt(args[5]);
        String sql = args[6];
        try (Connection conn = DriverManager.getConnection(url, props)) {
            conn.setAutoCommit(false);  // pgjdbc honours the fetch size only inside a transaction
            try (Statement stmt = conn.createStatement()) {
                stmt.setFetchSize(fetchSize);
                try (ResultSet rs = stmt.executeQuery(sql)) {
                    ResultSetMetaData meta = rs.getMetaData();
                    for (int i = 1; i <= meta.getColumnCount(); i++) {
                        System.out.println("column\t" + meta.getColumnLabel(i) + "\t" + meta.getColumnTypeName(i));
                    }
                    while (rs.next()) {
                        StringBuilder line = new StringBuilder("row");
                        for (int i = 1; i <= meta.getColumnCount(); i++) {
                            line.append('\t').append(rs.getString(i));
                        }
                        System.out.println(line);
                    }
                }
                printWarnings(stmt.getWarnings());
            }
            conn.commit();
        } catch (SQLException e) {
            System.out.println("error\t" + e.getSQLState() + "\t" + e.getMessage().replace('\n', ' '));
            System.exit(2);
        }
        System.out.println("done");
    }

    private static void printWarnings(SQLWarning warning) {
        for (; warning != null; warning = warning.getNextWarning()) {
            System.out.println("notice\t" + warning.getMessage().replace('\n', ' '));
        }
    }
}
