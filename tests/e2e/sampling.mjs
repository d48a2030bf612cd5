// The sampling side of the e2e TypeScript clients: answers every sampling/createMessage request
// the server sends (through the gateway) with a canned message that names the prompt, and counts
// the round trips.
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";

export function answerSampling(client) {
  const counter = { requests: 0 };
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    counter.requests += 1;
    return {
      model: "e2e-model",
      role: "assistant",
      content: { type: "text", text: `sampled #${counter.requests}: ${request.params.messages[0].content.text}` },
    };
  });
  return counter;
}
