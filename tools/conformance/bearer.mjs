// Preloaded into the MCP conformance suite's Node.js process (`node --import`): every HTTP request it makes to
// the server under test carries the bridge's bearer token. The suite's `server` command has no option for a
// token or a header (its MCP client is built with none), and with auth on the bridge answers 401 to a request
// without one. Both ways the suite sends requests, fetch() and undici's request(), go through undici's global
// dispatcher, so the header is added there, for the target's origin only and never over one the request has.
//   MCP_CONFORMANCE_BEARER   the access token
//   MCP_CONFORMANCE_TARGET   the server's URL (only its origin counts)
import { Agent, setGlobalDispatcher } from "undici";

const token = process.env.MCP_CONFORMANCE_BEARER;
const target = process.env.MCP_CONFORMANCE_TARGET;
if (!token || !target) {
  throw new Error("bearer.mjs needs MCP_CONFORMANCE_BEARER and MCP_CONFORMANCE_TARGET");
}
const origin = new URL(target).origin;
const value = `Bearer ${token}`;

function withBearer(headers) {
  if (headers == null) return { authorization: value };
  if (Array.isArray(headers)) {
    // undici's flat form: [name, value, name, value, ...]
    for (let i = 0; i < headers.length; i += 2) {
      if (String(headers[i]).toLowerCase() === "authorization") return headers;
    }
    return [...headers, "authorization", value];
  }
  const entries = typeof headers[Symbol.iterator] === "function" ? [...headers] : Object.entries(headers);
  if (entries.some(([name]) => String(name).toLowerCase() === "authorization")) return headers;
  return Object.fromEntries([...entries, ["authorization", value]]);
}

setGlobalDispatcher(
  new Agent().compose((dispatch) => (options, handler) => {
    const to = new URL(options.path, options.origin).origin;
    return dispatch(to === origin ? { ...options, headers: withBearer(options.headers) } : options, handler);
  }),
);
