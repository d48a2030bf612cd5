// Drive server-everything through mcpgate with the official TypeScript SDK client (1.x);
// print what happened as one JSON object.
//
//   node ts_client.mjs <url> [prefix]     (a federated route: every tool it calls named with it)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { answerSampling } from "./sampling.mjs";

const url = new URL(process.argv[2]);
const prefix = process.argv[3] ?? "";
const out = {};
const transport = new StreamableHTTPClientTransport(url);
const client = new Client({ name: "mcpgate-e2e", version: "1.0.0" }, { capabilities: { sampling: {} } });
// Sampling is a server→client request on the response stream; the client posts its answer back
// through the gateway (a JSON-RPC response, 202). Count the round trips.
const sampled = answerSampling(client);
await client.connect(transport);
out.sessionId = transport.sessionId;
out.protocolVersion = transport.protocolVersion;

const tools = await client.listTools();
out.tools = tools.tools.map((t) => t.name).sort();
const echo = await client.callTool({ name: prefix + "echo", arguments: { message: "hello through the gateway" } });
out.echo = echo.content[0].text;
const sum = await client.callTool({ name: prefix + "get-sum", arguments: { a: 2, b: 40 } });
out.sum = sum.content[0].text;

const progress = [];
const started = performance.now();
const slow = await client.callTool(
  { name: prefix + "trigger-long-running-operation", arguments: { duration: 1.2, steps: 4 } },
  undefined,
  { onprogress: (p) => progress.push({ progress: p.progress, total: p.total, at: performance.now() }) },
);
out.slow = { text: slow.content[0].text, started, resultAt: performance.now(), progress };

// Two sampling round trips in a row: the proxy must keep the round trip working repeatedly.
out.sampling = [];
for (const prompt of ["first", "second"]) {
  const r = await client.callTool({ name: prefix + "trigger-sampling-request", arguments: { prompt, maxTokens: 10 } });
  out.sampling.push(r.content[0].text);
}
out.samplingRequests = sampled.requests;

// Ending the session sends DELETE; the gateway forwards it and forgets the id.
const ended = transport.sessionId;
await transport.terminateSession();
out.terminated = transport.sessionId === undefined;
// The ended id is now refused by the gateway itself (404).
const after = await fetch(url, {
  method: "POST",
  headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": ended },
  body: JSON.stringify({ jsonrpc: "2.0", id: 99, method: "tools/list" }),
});
out.afterDeleteStatus = after.status;
await client.close();
console.log(JSON.stringify(out));
