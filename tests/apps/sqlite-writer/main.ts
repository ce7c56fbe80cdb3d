// A test app that writes SQLite without pause: from its start it inserts
// a row every millisecond or so into /data/rows.db (WAL mode, 1 KiB rows
// whose text says which row they are, a transaction each), the way a busy
// app would, so that a backup taken meanwhile catches it mid-write.
// GET /count answers the number of rows.
import { DatabaseSync } from "node:sqlite";

const db = new DatabaseSync("/data/rows.db");
db.exec("PRAGMA journal_mode = WAL");
db.exec("PRAGMA synchronous = NORMAL");
db.exec("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
const insert = db.prepare("INSERT INTO rows (id, v) VALUES (?, ?)");
const count = db.prepare("SELECT count(*) AS n FROM rows");
let next = (count.get() as { n: number }).n + 1;

function write() {
  for (let i = 0; i < 8; i++) {
    db.exec("BEGIN");
    insert.run(next, `row-${next}-` + "x".repeat(1000));
    db.exec("COMMIT");
    next++;
  }
  setTimeout(write, 1);
}
write();

Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.env.get("PORT") ?? 8000) }, (req) => {
  if (new URL(req.url).pathname === "/count") {
    return new Response(String((count.get() as { n: number }).n));
  }
  return new Response("sqlite-writer\n");
});
