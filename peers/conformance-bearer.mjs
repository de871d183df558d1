// Preloaded into the @modelcontextprotocol/conformance CLI (node --import) because the CLI has
// no option for credentials: its server scenarios connect with the SDK's
// StreamableHTTPClientTransport, which calls the global fetch. This wraps that fetch to add
// `Authorization: Bearer $MCP_CONFORMANCE_BEARER` to requests whose URL starts with
// $MCP_CONFORMANCE_URL (nothing else gets the token). Without the variables it does nothing.
const token = process.env.MCP_CONFORMANCE_BEARER;
const prefix = process.env.MCP_CONFORMANCE_URL;
if (token && prefix) {
  const original = globalThis.fetch;
  globalThis.fetch = (input, init = {}) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (!url.startsWith(prefix)) return original(input, init);
    const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
    headers.set('authorization', `Bearer ${token}`);
    return original(input, { ...init, headers });
  };
}
