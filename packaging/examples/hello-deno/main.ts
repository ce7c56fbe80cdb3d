// Example ds app: a Deno HTTP server on 127.0.0.1:$PORT that shows what it
// sees from inside its sandbox. Visits are counted in /data/visits, so the
// count survives restarts.
const port = Number(Deno.env.get("PORT") ?? "8000");

async function visits(): Promise<number> {
  let n = 0;
  try {
    n = Number((await Deno.readTextFile("/data/visits")).trim()) || 0;
  } catch {
    // first visit
  }
  n += 1;
  await Deno.writeTextFile("/data/visits", String(n));
  return n;
}

function escape(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

Deno.serve({ hostname: "127.0.0.1", port }, async (req) => {
  const url = new URL(req.url);
  if (url.pathname === "/ws" && req.headers.get("upgrade") === "websocket") {
    // WebSocket echo: proves upgrades travel through the host and the agent.
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`echo: ${e.data}`);
    return response;
  }
  if (url.pathname === "/fetch") {
    // Egress: fetch() goes through $HTTP_PROXY / $HTTPS_PROXY, the agent's
    // proxy; the host allows only what the admin put on the allowlist.
    const target = url.searchParams.get("url") ?? "";
    try {
      const res = await fetch(target);
      const body = await res.text();
      return new Response(`fetched ${target}: ${res.status}\n${body}`);
    } catch (e) {
      return new Response(`fetch ${target} failed: ${e}\n`, { status: 502 });
    }
  }
  if (url.pathname === "/probe") {
    // What Deno's own permissions (the second layer inside the sandbox)
    // let this app do: each attempt's outcome, "ok" or the error's name.
    const attempt = async (f: () => Promise<unknown>) => {
      try {
        await f();
        return "ok";
      } catch (e) {
        return e instanceof Error ? e.name : String(e);
      }
    };
    const probe = {
      read_etc_passwd: await attempt(() => Deno.readTextFile("/etc/passwd")),
      connect_unlisted: await attempt(async () =>
        (await Deno.connect({ hostname: "10.1.2.3", port: 80 })).close()
      ),
      write_app: await attempt(() => Deno.writeTextFile("/app/probe", "x")),
      run: await attempt(() => new Deno.Command("/app/main.ts").output()),
      write_data: await attempt(() => Deno.writeTextFile("/data/probe", "x")),
    };
    return Response.json(probe);
  }
  if (url.pathname !== "/") {
    return new Response(`no page at ${escape(url.pathname)}\n`, { status: 404 });
  }
  const data = [];
  for await (const e of Deno.readDir("/data")) data.push(e.name);
  const rows: [string, string][] = [
    ["visits (kept in /data)", String(await visits())],
    ["hostname", Deno.hostname()],
    ["uid", String(Deno.uid())],
    ["PORT", String(port)],
    ["HTTP_PROXY", Deno.env.get("HTTP_PROXY") ?? ""],
    ["/data holds", data.join(", ")],
    ["Deno", Deno.version.deno],
  ];
  const table = rows.map(([k, v]) => `<tr><th>${escape(k)}</th><td>${escape(v)}</td></tr>`).join("");
  return new Response(
    `<!doctype html><title>hello-deno</title><h1>hello from a ds sandbox (Deno)</h1><table>${table}</table>\n`,
    { headers: { "content-type": "text/html; charset=utf-8" } },
  );
});
