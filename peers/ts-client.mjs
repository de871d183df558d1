#!/usr/bin/env node
// A real MCP client: the TypeScript SDK (@modelcontextprotocol/sdk), OAuth included.
//
//   node peers/ts-client.mjs --url http://127.0.0.1:PORT/mcp --flow code [--call add '{"a":2,"b":3}'] ...
//   node peers/ts-client.mjs --url ... --flow cc --client-id ID --client-secret SECRET
//
// --flow code: an OAuthClientProvider of ours (in-memory storage) given to the SDK's
//   StreamableHTTPClientTransport; the SDK's auth() does discovery from the 401 (Protected
//   Resource Metadata, authorization server metadata), dynamic registration and PKCE, then calls
//   redirectToAuthorization(): there a headless "browser" follows the authorization server's
//   redirects (keeping cookies) to the redirect URI and keeps `code`; connect() then fails with
//   UnauthorizedError as the SDK documents, we call transport.finishAuth(code) and connect again.
// --flow cc: the SDK's ClientCredentialsProvider (client/auth-extensions.js).
// --sdk DIR: the SDK installed in peers/DIR/node_modules instead of peers/node_modules (the
//   legacy client of MCP 2025-03-26 in peers/legacy-ts, which discovers the authorization
//   server at the MCP server's origin).
//
// --list-tools: first client.listTools() (every page); the output gains "tools": [each tool as
//   the SDK returned it]; without --call no tool is called then.
//
// Prints one JSON line: {"ok", "sdk", "results": [{tool, text, is_error}], "tokens", "trace"}.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: opts } = parseArgs({
  options: {
    sdk: { type: 'string' },
    url: { type: 'string' },
    flow: { type: 'string', default: 'code' },
    scope: { type: 'string', default: 'mcp:read mcp:write' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    issuer: { type: 'string' },
    'redirect-port': { type: 'string', default: '53683' },
    call: { type: 'string', multiple: true },
    'list-tools': { type: 'boolean', default: false },
  },
  allowPositionals: true,
  strict: false,
});

// The SDK's own files, from the chosen installation (its dependencies resolve beside it).
const SDK = new URL(`./${opts.sdk ? `${opts.sdk}/` : ''}node_modules/@modelcontextprotocol/sdk/`, import.meta.url);
const SDK_VERSION = JSON.parse(readFileSync(new URL('package.json', SDK))).version;
const { Client } = await import(new URL('dist/esm/client/index.js', SDK));
const { StreamableHTTPClientTransport } = await import(new URL('dist/esm/client/streamableHttp.js', SDK));
const { UnauthorizedError } = await import(new URL('dist/esm/client/auth.js', SDK));

// --call TOOL JSON takes two values; parseArgs gives us the first, the rest are positionals.
function calls() {
  const argv = process.argv.slice(2);
  const out = [];
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--call') {
      out.push([argv[i + 1], JSON.parse(argv[i + 2])]);
      i += 2;
    }
  }
  if (out.length) return out;
  return opts['list-tools'] ? [] : [['add', { a: 2, b: 3 }]];
}

const trace = [];
const issued = [];

function decodeClaims(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  } catch {
    return null;
  }
}

// Every request the SDK makes (MCP and OAuth) goes through this fetch, so the trace shows them.
async function tracingFetch(input, init) {
  const response = await fetch(input, init);
  const url = String(input instanceof Request ? input.url : input).split('?')[0];
  const entry = { method: init?.method || 'GET', url, status: response.status };
  const challenge = response.headers.get('www-authenticate');
  if (challenge) entry.www_authenticate = challenge;
  if ((response.headers.get('content-type') || '').startsWith('application/json')) {
    try {
      entry.json = await response.clone().json();
    } catch {
      /* not JSON after all */
    }
  }
  trace.push(entry);
  return response;
}

async function headlessBrowser(authorizationUrl, redirectUri) {
  const cookies = new Map();
  let url = authorizationUrl;
  for (let i = 0; i < 20; i += 1) {
    if (url.startsWith(redirectUri)) {
      const params = Object.fromEntries(new URL(url).searchParams);
      trace.push({ browser: 'redirect_uri', url: redirectUri, params: Object.keys(params).sort() });
      return params;
    }
    const cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const response = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair.indexOf('=');
      cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    trace.push({ browser: 'GET', url: url.split('?')[0], status: response.status });
    const location = response.headers.get('location');
    if (!location) throw new Error(`authorization stopped at ${url.split('?')[0]}: ${response.status} ${await response.text()}`);
    url = new URL(location, url).toString();
  }
  throw new Error('too many redirects during authorization');
}

class HeadlessProvider {
  constructor(redirectUri, scope) {
    this._redirectUri = redirectUri;
    this._scope = scope;
    this._tokens = undefined;
    this._client = undefined;
    this._verifier = undefined;
    this.pendingCode = undefined;
  }

  get redirectUrl() {
    return this._redirectUri;
  }

  get clientMetadata() {
    return {
      client_name: `mcp-oauth-filter e2e (typescript sdk ${SDK_VERSION})`,
      redirect_uris: [this._redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      scope: this._scope,
    };
  }

  clientInformation() {
    return this._client;
  }

  saveClientInformation(info) {
    this._client = info;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    issued.push({ claims: decodeClaims(tokens.access_token), scope: tokens.scope, expires_in: tokens.expires_in });
    this._tokens = tokens;
  }

  async redirectToAuthorization(authorizationUrl) {
    const url = authorizationUrl.toString();
    trace.push({ browser: 'authorize', url: url.split('?')[0], params: Object.fromEntries(authorizationUrl.searchParams) });
    const params = await headlessBrowser(url, this._redirectUri);
    if (!params.code) throw new Error(`authorization error: ${JSON.stringify(params)}`);
    this.pendingCode = params.code;
  }

  saveCodeVerifier(verifier) {
    this._verifier = verifier;
  }

  codeVerifier() {
    return this._verifier;
  }
}

async function connect(provider) {
  const url = new URL(opts.url);
  const makeTransport = () => new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: tracingFetch });
  const client = new Client({ name: 'mcp-oauth-filter-e2e-ts', version: '1.0.0' });
  let transport = makeTransport();
  try {
    await client.connect(transport);
    return { client, transport };
  } catch (err) {
    if (!(err instanceof UnauthorizedError) || !provider.pendingCode) throw err;
  }
  // The documented second half of the authorization-code flow.
  await transport.finishAuth(provider.pendingCode);
  provider.pendingCode = undefined;
  transport = makeTransport();
  const again = new Client({ name: 'mcp-oauth-filter-e2e-ts', version: '1.0.0' });
  await again.connect(transport);
  return { client: again, transport };
}

async function main() {
  const { ClientCredentialsProvider } = opts.flow === 'cc'
    ? await import(new URL('dist/esm/client/auth-extensions.js', SDK))
    : {};
  const provider = opts.flow === 'cc'
    ? new ClientCredentialsProvider({
      clientId: opts['client-id'],
      clientSecret: opts['client-secret'],
      scope: opts.scope,
      ...(opts.issuer ? { expectedIssuer: opts.issuer } : {}),
    })
    : new HeadlessProvider(`http://127.0.0.1:${opts['redirect-port']}/callback`, opts.scope);
  if (opts.flow === 'cc') {
    const save = provider.saveTokens.bind(provider);
    provider.saveTokens = (tokens) => {
      issued.push({ claims: decodeClaims(tokens.access_token), scope: tokens.scope, expires_in: tokens.expires_in });
      save(tokens);
    };
  }
  const { client, transport } = await connect(provider);
  let tools;
  if (opts['list-tools']) {
    tools = [];
    let cursor;
    for (let page = 0; page < 100; page += 1) {
      const listed = await client.listTools(cursor ? { cursor } : undefined);
      tools.push(...listed.tools);
      cursor = listed.nextCursor;
      if (!cursor) break;
    }
  }
  const results = [];
  for (const [name, args] of calls()) {
    const result = await client.callTool({ name, arguments: args });
    const text = (result.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
    results.push({ tool: name, text, is_error: Boolean(result.isError) });
  }
  await transport.terminateSession().catch(() => {});
  await client.close();
  const ok = (results.length > 0 || opts['list-tools']) && results.every((r) => !r.is_error);
  return { ok, results, ...(tools ? { tools } : {}) };
}

const started = Date.now();
let outcome;
try {
  outcome = await main();
} catch (err) {
  outcome = { ok: false, error: `${err?.name}: ${err?.message}` };
}
process.stdout.write(`${JSON.stringify({
  ...outcome, sdk: `typescript sdk ${SDK_VERSION}`, tokens: issued, trace, seconds: (Date.now() - started) / 1000,
})}\n`);
process.exit(outcome.ok ? 0 : 1);
