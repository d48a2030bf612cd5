// The OAuth path as a real TypeScript SDK client sees it: a 401 from the gateway, Protected
// Resource Metadata discovery from its WWW-Authenticate header, the authorization server's
// metadata, then a session with a bearer token (tools filtered by policy, a denied call's reason).
//
//   node ts_auth_client.mjs <url> <token>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  extractResourceMetadataUrl,
} from "@modelcontextprotocol/sdk/client/auth.js";

const url = new URL(process.argv[2]);
const token = process.argv[3];
const out = {};

// 1. Unauthenticated: the SDK client fails, and the 401 says where to learn how to log in.
try {
  const c = new Client({ name: "anon", version: "1" });
  await c.connect(new StreamableHTTPClientTransport(url));
  out.anonymous = "connected";
} catch (e) {
  out.anonymous = `${e.constructor.name}: ${e.message}`;
}
const probe = await fetch(url, {
  method: "POST",
  headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
  body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }),
});
out.status = probe.status;
const metadataUrl = extractResourceMetadataUrl(probe);
out.resourceMetadataUrl = metadataUrl?.href;

// 2. Discovery, the SDK's own way.
const resource = await discoverOAuthProtectedResourceMetadata(url, { resourceMetadataUrl: metadataUrl });
out.resource = resource.resource;
out.authorizationServers = resource.authorization_servers;
const as = await discoverAuthorizationServerMetadata(resource.authorization_servers[0]);
out.tokenEndpoint = as?.token_endpoint;

// 3. With a token.
const transport = new StreamableHTTPClientTransport(url, { requestInit: { headers: { Authorization: `Bearer ${token}` } } });
const client = new Client({ name: "mcpgate-e2e-auth", version: "1" });
await client.connect(transport);
out.sessionId = transport.sessionId;
out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
out.echo = (await client.callTool({ name: "echo", arguments: { text: "with a token" } })).content[0].text;
try {
  await client.callTool({ name: "add", arguments: { a: 1, b: 2 } });
  out.denied = null;
} catch (e) {
  out.denied = `${e.constructor.name}: ${e.message}`;
}
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
