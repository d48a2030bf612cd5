// Drive server-everything through mcpgate over a WebSocket with the official TypeScript SDK
// client (1.x, WebSocketClientTransport: subprotocol `mcp`, one message per text frame); print
// what happened as one JSON object. Node 20 needs --experimental-websocket for the global
// WebSocket the transport uses.
//
//   node --experimental-websocket ws_ts_client.mjs <ws-url>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import { answerSampling } from "./sampling.mjs";

const url = new URL(process.argv[2]);
const out = {};
const transport = new WebSocketClientTransport(url);
const client = new Client({ name: "mcpgate-ws-e2e", version: "1.0.0" }, { capabilities: { sampling: {} } });
const sampled = answerSampling(client);
let closed = false;
transport.onclose = () => { closed = true; };
await client.connect(transport);
out.serverName = client.getServerVersion()?.name;

const tools = await client.listTools();
out.tools = tools.tools.map((t) => t.name).sort();
const echo = await client.callTool({ name: "echo", arguments: { message: "hello over a WebSocket" } });
out.echo = echo.content[0].text;

const progress = [];
const slow = await client.callTool(
  { name: "trigger-long-running-operation", arguments: { duration: 1.2, steps: 4 } },
  undefined,
  { onprogress: (p) => progress.push({ progress: p.progress, total: p.total, at: performance.now() }) },
);
out.slow = { text: slow.content[0].text, resultAt: performance.now(), progress };

// A tool the policy denies: refused by the gateway with its JSON-RPC error.
try {
  await client.callTool({ name: "get-env", arguments: {} });
  out.denied = "not refused";
} catch (e) {
  out.denied = { code: e.code, message: e.message };
}

// A tool limited to one call a minute: the second is refused with 429's JSON-RPC error.
out.limited = [];
for (let i = 0; i < 2; i++) {
  try {
    const r = await client.callTool({ name: "get-sum", arguments: { a: i, b: 40 } });
    out.limited.push({ ok: r.content[0].text });
  } catch (e) {
    out.limited.push({ code: e.code, message: e.message });
  }
}

out.sampling = [];
for (const prompt of ["first", "second"]) {
  const r = await client.callTool({ name: "trigger-sampling-request", arguments: { prompt, maxTokens: 10 } });
  out.sampling.push(r.content[0].text);
}
out.samplingRequests = sampled.requests;
out.closedEarly = closed;
await client.close();
console.log(JSON.stringify(out));
