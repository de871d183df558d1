#!/usr/bin/env node
// A real OAuth 2.1 authorization server for the e2e tests and the demo: npm `oidc-provider`
// (9.x) with a headless, auto-approving login, on 127.0.0.1 and plain HTTP.
//
//   node peers/auth-server.mjs [--port 0] [--access-token-ttl 300] [--subject demo-user]
//                              [--alg RS256|ES256] [--no-rfc8414] [--opaque]
//                              [--default-resource URL] [--legacy-metadata]
//
// Once listening it prints one JSON line on stdout:
//   {"ready": true, "issuer": "http://127.0.0.1:PORT", "port": PORT,
//    "jwks_uri": "...", "cc_client": {"client_id": "...", "client_secret": "..."},
//    "introspection_endpoint": "...", "introspection_client": {...}, "introspection_client_post": {...}}
//
// What it offers:
// - JWT access tokens (RFC 9068, `typ: at+jwt`) whose `aud` is the RFC 8707 `resource` the
//   client asked for, `scope` = the requested scopes limited to mcp:read mcp:write mcp:admin;
// - or, with --opaque, opaque access tokens for every resource (oidc-provider's
//   `accessTokenFormat: 'opaque'`), which resource servers check by introspection (RFC 7662)
//   and clients can revoke (RFC 7009); two confidential clients for a resource server to
//   introspect with, one authenticating with client_secret_basic, one with client_secret_post;
// - JWKS with one RSA (RS256) and one P-256 (ES256) key, made fresh at every start;
// - RFC 8414 metadata at /.well-known/oauth-authorization-server and OpenID Connect discovery
//   at /.well-known/openid-configuration (both served by oidc-provider); --no-rfc8414 answers
//   404 on the former, to test clients/filters that must fall back to the latter;
// - open dynamic client registration (public clients with token_endpoint_auth_method "none",
//   http://127.0.0.1 / localhost redirect URIs), PKCE (S256, required for public clients),
//   the client credentials grant (a pre-registered confidential client, or any registered one
//   that asks for the grant), refresh tokens for clients allowed the refresh_token grant;
// - a login that needs no person: GET /interaction/<uid> logs the subject in (`login_hint`
//   when the request has one, else --subject) and approves every requested scope, so the
//   authorization-code flow completes by following redirects with a cookie jar.
//
// For clients of MCP 2025-03-26, which send no RFC 8707 `resource`:
// - --default-resource URL: a request without `resource` gets tokens for URL (its `aud`, its
//   scopes), as a server configured with a default audience does;
// - --legacy-metadata: the metadata lists only the response modes `query` and `fragment`
//   (oidc-provider always lists `form_post` too, which the Python SDK before 1.10 cannot parse:
//   it then ignores the whole document); client_secret_jwt and private_key_jwt are not offered,
//   so no `*_auth_signing_alg_values_supported` is listed (the same SDK requires them absent).
//
// Loopback test fixture: fresh keys, in-memory storage, no real users.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'access-token-ttl': { type: 'string', default: '300' },
    subject: { type: 'string', default: 'demo-user' },
    alg: { type: 'string', default: 'RS256' },
    'no-rfc8414': { type: 'boolean', default: false },
    opaque: { type: 'boolean', default: false },
    'default-resource': { type: 'string' },
    'legacy-metadata': { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
  },
});

const OFFERED_SCOPES = ['mcp:read', 'mcp:write', 'mcp:admin'];
const OIDC_SCOPES = ['openid', 'offline_access'];
const ACCESS_TOKEN_TTL = Number.parseInt(opts['access-token-ttl'], 10);
const CC_CLIENT = { client_id: 'mcp-cc-client', client_secret: randomBytes(24).toString('base64url') };
// Resource servers (the filter) introspecting opaque tokens.
const INTROSPECTION_CLIENT = { client_id: 'mcp-gateway', client_secret: randomBytes(24).toString('base64url') };
const INTROSPECTION_CLIENT_POST = { client_id: 'mcp-gateway-post', client_secret: randomBytes(24).toString('base64url') };

function log(...args) {
  if (!opts.quiet) console.error('[auth-server]', ...args);
}

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const stamp = Date.now().toString(36);
  return [
    { ...rsa, kid: `rsa-${stamp}`, alg: 'RS256', use: 'sig' },
    { ...ec, kid: `ec-${stamp}`, alg: 'ES256', use: 'sig' },
  ];
}

function asList(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function isResourceUrl(value) {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && !url.hash;
  } catch {
    return false;
  }
}

// Filled in once the socket is bound: the issuer contains the port.
let provider;
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end('starting');
};

const server = createServer((req, res) => handler(req, res));

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const accountId = params.login_hint || opts.subject;
    log(`login: ${accountId} (auto)`);
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    // Normally loadExistingGrant below approves everything, so this is a fallback.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details || {};
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    log(`consent: ${params.client_id} (auto)`);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  res.statusCode = 400;
  res.end(`unsupported prompt ${prompt.name}`);
}

server.listen(Number.parseInt(opts.port, 10), opts.host, () => {
  const { port } = server.address();
  const issuer = `http://${opts.host}:${port}`;

  provider = new Provider(issuer, {
    clients: [
      {
        ...CC_CLIENT,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: OFFERED_SCOPES.join(' '),
      },
      ...[
        [INTROSPECTION_CLIENT, 'client_secret_basic'],
        [INTROSPECTION_CLIENT_POST, 'client_secret_post'],
      ].map(([client, method]) => ({
        ...client,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: method,
      })),
    ],
    jwks: { keys: signingKeys() },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // Listed here too so that clients may register with `scope: "mcp:read ..."` (oidc-provider
    // checks registered scopes against this list) and see them in scopes_supported; tokens
    // still get them through the resource server below.
    scopes: [...OIDC_SCOPES, ...OFFERED_SCOPES],
    claims: { openid: ['sub'] },
    responseTypes: ['code'],
    ...(opts['legacy-metadata']
      ? { clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post'] }
      : {}),
    pkce: { required: () => true },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf || opts['default-resource'],
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (!isResourceUrl(resourceIndicator)) throw new provider.constructor.errors.InvalidTarget();
          return {
            scope: OFFERED_SCOPES.join(' '),
            audience: resourceIndicator,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: opts.opaque ? 'opaque' : 'jwt',
            ...(opts.opaque ? {} : { jwt: { sign: { alg: opts.alg } } }),
          };
        },
      },
    },
    // Approve whatever a logged-in subject's client asks for (within what we offer).
    loadExistingGrant: async (ctx) => {
      const accountId = ctx.oidc.session?.accountId;
      if (!accountId) return undefined;
      const clientId = ctx.oidc.client.clientId;
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
      let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) grant = new ctx.oidc.provider.Grant({ accountId, clientId });
      const requested = String(ctx.oidc.params.scope || '').split(' ').filter(Boolean);
      const oidcScopes = requested.filter((s) => OIDC_SCOPES.includes(s));
      const resourceScopes = requested.filter((s) => OFFERED_SCOPES.includes(s));
      if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
      const indicators = asList(ctx.oidc.params.resource);
      if (!indicators.length && opts['default-resource']) indicators.push(opts['default-resource']);
      for (const indicator of indicators) {
        grant.addResourceScope(indicator, resourceScopes.join(' '));
      }
      await grant.save();
      return grant;
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // A registered client may later ask for more of what we offer: an MCP client registers with
  // the scope of the first challenge and steps up after a 403 insufficient_scope (MCP
  // 2026-07-28) without registering again, so its registered scope must not cap the request.
  const find = provider.Client.find.bind(provider.Client);
  provider.Client.find = async (...args) => {
    const client = await find(...args);
    if (client?.scope) client.scope = [...OIDC_SCOPES, ...OFFERED_SCOPES].join(' ');
    return client;
  };

  if (opts['legacy-metadata']) {
    // The discovery documents as a server configured for older clients publishes them.
    provider.use(async (ctx, next) => {
      await next();
      const modes = ctx.path.startsWith('/.well-known/') && ctx.body?.response_modes_supported;
      if (Array.isArray(modes)) {
        ctx.body.response_modes_supported = modes.filter((m) => m === 'query' || m === 'fragment');
      }
    });
  }

  const callback = provider.callback();
  handler = (req, res) => {
    const path = (req.url || '/').split('?')[0];
    log(req.method, req.url);
    if (path.startsWith('/interaction/')) {
      interaction(req, res).catch((err) => {
        log('interaction failed:', err);
        if (!res.headersSent) res.statusCode = 500;
        res.end(String(err));
      });
      return;
    }
    if (opts['no-rfc8414'] && path.startsWith('/.well-known/oauth-authorization-server')) {
      // oidc-provider serves RFC 8414 metadata as well as OpenID Connect discovery; this
      // switch hides the former, for testing discovery that must fall back to the latter.
      res.statusCode = 404;
      res.setHeader('content-type', 'application/json');
      res.end('{"error":"not_found"}');
      return;
    }
    callback(req, res);
  };

  process.stdout.write(
    `${JSON.stringify({
      ready: true,
      issuer,
      port,
      jwks_uri: `${issuer}/jwks`,
      cc_client: CC_CLIENT,
      introspection_endpoint: `${issuer}/token/introspection`,
      introspection_client: INTROSPECTION_CLIENT,
      introspection_client_post: INTROSPECTION_CLIENT_POST,
    })}\n`,
  );
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
