// pgjdbc as DBeaver uses it: the metadata calls behind its navigator, then a prepared statement.
// Usage: java -cp postgresql.jar Jdbc.java PORT PASSWORD SQL PRINCIPAL SINCE; prints JSON.
import java.sql.*;
import java.time.OffsetDateTime;
import java.util.*;

public class Jdbc {
    static String quote(String s) { return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\""; }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/coldtrail?sslmode=require&ApplicationName=DBeaver";
        try (Connection c = DriverManager.getConnection(url, "admin", args[1])) {
            DatabaseMetaData meta = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet r = meta.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (r.next()) tables.add(quote(r.getString("TABLE_NAME")));
            }
            List<String> columns = new ArrayList<>();
            try (ResultSet r = meta.getColumns(null, "public", "cloudtrail", "%")) {
                while (r.next()) columns.add("[" + quote(r.getString("COLUMN_NAME")) + "," + quote(r.getString("TYPE_NAME")) + "]");
            }
            int keys = 0;
            try (ResultSet r = meta.getPrimaryKeys(null, "public", "cloudtrail")) {
                while (r.next()) keys++;
            }
            List<String> rows = new ArrayList<>();
            try (PreparedStatement p = c.prepareStatement(args[2])) {
                p.setString(1, args[3]);
                p.setObject(2, OffsetDateTime.parse(args[4]));
                try (ResultSet r = p.executeQuery()) {
                    while (r.next()) rows.add("[" + quote(r.getString(1)) + "," + r.getLong(2) + "]");
                }
            }
            System.out.println("{\"tables\":[" + String.join(",", tables) + "],\"columns\":[" + String.join(",", columns)
                + "],\"primary_keys\":" + keys + ",\"rows\":[" + String.join(",", rows) + "]}");
        }
    }
}
