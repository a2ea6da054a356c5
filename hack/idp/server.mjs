// Gatehouse demo / end-to-end test OpenID provider.
//
// A small, real OpenID Connect provider built on the npm package
// `oidc-provider`, for Gatehouse's end-to-end tests (see e2e/idp) and for a
// local demo. It listens on 127.0.0.1 only, keeps everything in memory and
// generates a fresh signing key on every start. It is NOT meant for
// production use.
//
// Usage: npm ci --prefix hack/idp && IDP_REDIRECT_URIS=... node hack/idp/server.mjs
//
// Configuration (environment variables):
//
//   IDP_PORT                       TCP port on 127.0.0.1 (default 0 = pick a
//                                  free port). The issuer is
//                                  http://127.0.0.1:<port>. Once listening the
//                                  server prints exactly one line
//                                  `READY <issuer>` on stdout; everything else
//                                  goes to stderr.
//   IDP_CLIENT_ID                  client_id of the one registered client
//                                  (default "gatehouse").
//   IDP_CLIENT_SECRET              its client_secret (default
//                                  "gatehouse-demo-secret"). The client is
//                                  confidential and may authenticate with
//                                  client_secret_basic or client_secret_post.
//   IDP_CLIENT_JWKS                optional JSON key set ({"keys": [...]}) of
//                                  the client's public keys: the client then
//                                  authenticates with private_key_jwt only
//                                  and has no client_secret.
//   IDP_REDIRECT_URIS              required; comma separated redirect URIs.
//   IDP_POST_LOGOUT_REDIRECT_URIS  optional; comma separated
//                                  post_logout_redirect_uris.
//   IDP_BACKCHANNEL_LOGOUT_URI     optional; when set the client registers
//                                  backchannel_logout_uri with
//                                  backchannel_logout_session_required: true.
//   IDP_ACCESS_TOKEN_TTL           access token lifetime in seconds (default
//                                  3600).
//   IDP_ID_TOKEN_TTL               ID token lifetime in seconds (default 3600).
//   IDP_REFRESH_TOKEN_TTL          refresh token lifetime in seconds (default
//                                  1209600 = 14 days).
//   IDP_USERS                      optional JSON array replacing the built-in
//                                  users, e.g.
//                                  [{"login":"bob","password":"pw","email":"bob@x.example","groups":["g"]}]
//                                  Per user: login and password (required),
//                                  sub (default login), email, email_verified
//                                  (default true), name and preferred_username
//                                  (default login), groups (default []).
//   IDP_EXIT_ON_STDIN_CLOSE        when "1", exit once stdin reaches EOF (the
//                                  Go test helper sets it so that the IdP dies
//                                  with the test binary).
//
// Built-in users: demo/demo (demo@example.com, groups demo and developers) and
// alice/alice (alice@corp.example, group admins).
//
// Behaviour: authorization code flow with PKCE S256 required; scopes openid,
// email, profile, groups and offline_access; ID tokens carry the claims of the
// granted scopes (conformIdTokenClaims: false); refresh tokens are always
// issued to the client and rotated on every use; revocation, userinfo,
// RP-initiated logout and back-channel logout are enabled. The login page is a
// plain HTML form; consent is granted automatically.
//
// On stderr, one line per event, with a constant message and key=value fields:
//   token grant_type=<type> status=<http status> [error=<code>]
//   revocation token_type_hint=<hint> revoked=<AccessToken|RefreshToken|none> status=<http status>
//   login user=<login> result=<ok|bad_credentials>
//   backchannel logout sent client_id=<id> sid=<sid>
//   backchannel logout failed client_id=<id> sid=<sid> error=<message>
//
// Test endpoint: GET /_test/revocations returns the number of revocation calls
// per kind of revoked token as JSON, e.g. {"AccessToken":0,"RefreshToken":1,"none":0}.
//
// The process exits with status 0 on SIGTERM or SIGINT.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { format } from 'node:util';

import Provider from 'oidc-provider';

// Keep stdout for the READY line alone: oidc-provider prints notices with
// console.info, which would otherwise land on stdout.
const logLine = (...args) => process.stderr.write(`${format(...args)}\n`);
console.log = logLine;
console.info = logLine;
console.debug = logLine;

function fatal(message) {
  logLine(`idp: ${message}`);
  process.exit(2);
}

function envList(name) {
  return (process.env[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function envSeconds(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) fatal(`${name} must be a positive integer number of seconds`);
  return n;
}

const port = Number(process.env.IDP_PORT || 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fatal('IDP_PORT must be a TCP port number');

const clientId = process.env.IDP_CLIENT_ID || 'gatehouse';
const clientSecret = process.env.IDP_CLIENT_SECRET || 'gatehouse-demo-secret';
const redirectUris = envList('IDP_REDIRECT_URIS');
if (redirectUris.length === 0) fatal('IDP_REDIRECT_URIS is required (comma separated)');
const postLogoutRedirectUris = envList('IDP_POST_LOGOUT_REDIRECT_URIS');
const backchannelLogoutUri = process.env.IDP_BACKCHANNEL_LOGOUT_URI || '';

const accessTokenTTL = envSeconds('IDP_ACCESS_TOKEN_TTL', 3600);
const idTokenTTL = envSeconds('IDP_ID_TOKEN_TTL', 3600);
const refreshTokenTTL = envSeconds('IDP_REFRESH_TOKEN_TTL', 14 * 24 * 3600);

const defaultUsers = [
  {
    login: 'demo', password: 'demo', email: 'demo@example.com', groups: ['demo', 'developers'],
  },
  {
    login: 'alice', password: 'alice', email: 'alice@corp.example', groups: ['admins'],
  },
];

function loadUsers() {
  if (!process.env.IDP_USERS) return defaultUsers;
  let users;
  try {
    users = JSON.parse(process.env.IDP_USERS);
  } catch (err) {
    fatal(`IDP_USERS is not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(users) || users.length === 0) fatal('IDP_USERS must be a non-empty JSON array');
  for (const u of users) {
    if (typeof u?.login !== 'string' || !u.login || typeof u.password !== 'string') {
      fatal('every IDP_USERS entry needs string "login" and "password"');
    }
  }
  return users;
}

// accounts maps sub to the full user record; logins maps login to sub.
const accounts = new Map();
const logins = new Map();
for (const u of loadUsers()) {
  const user = {
    sub: u.sub || u.login,
    login: u.login,
    password: u.password,
    email: u.email,
    email_verified: u.email_verified ?? true,
    name: u.name || u.login,
    preferred_username: u.preferred_username || u.login,
    groups: u.groups || [],
  };
  accounts.set(user.sub, user);
  logins.set(user.login, user.sub);
}

function findAccount(_ctx, sub) {
  const user = accounts.get(sub);
  if (!user) return undefined;
  return {
    accountId: sub,
    // oidc-provider filters these by the granted scopes and claims.
    async claims() {
      return {
        sub,
        email: user.email,
        email_verified: user.email_verified,
        name: user.name,
        preferred_username: user.preferred_username,
        groups: user.groups,
      };
    },
  };
}

// ---- HTML ----------------------------------------------------------------

function escapeHtml(s) {
  return String(s)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

const LOGIN_TITLE = 'Sign in to the Gatehouse demo IdP';
const LOGIN_ERROR = 'Invalid login or password.';

function loginPage(uid, login, error) {
  const err = error ? `<p id="error" role="alert">${escapeHtml(error)}</p>\n` : '';
  return page(LOGIN_TITLE, `${err}<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<p><label>Login <input type="text" name="login" value="${escapeHtml(login)}" autocomplete="username" autofocus required></label></p>
<p><label>Password <input type="password" name="password" autocomplete="current-password" required></label></p>
<p><button type="submit">Sign in</button></p>
</form>`);
}

// ---- Provider --------------------------------------------------------------

// Everything is per process: a fresh signing key and cookie signing key.
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  use: 'sig',
  alg: 'RS256',
};

const client = {
  client_id: clientId,
  client_secret: clientSecret,
  client_name: 'Gatehouse',
  redirect_uris: redirectUris,
  post_logout_redirect_uris: postLogoutRedirectUris,
  response_types: ['code'],
  grant_types: ['authorization_code', 'refresh_token'],
  token_endpoint_auth_method: 'client_secret_basic',
};
if (process.env.IDP_CLIENT_JWKS) {
  try {
    client.jwks = JSON.parse(process.env.IDP_CLIENT_JWKS);
  } catch (err) {
    fatal(`IDP_CLIENT_JWKS is not valid JSON: ${err.message}`);
  }
  client.token_endpoint_auth_method = 'private_key_jwt';
  delete client.client_secret;
}
if (backchannelLogoutUri) {
  client.backchannel_logout_uri = backchannelLogoutUri;
  client.backchannel_logout_session_required = true;
}

function configuration() {
  return {
    clients: [client],
    jwks: { keys: [signingKey] },
    findAccount,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access'],
    responseTypes: ['code'],
    // ID tokens carry every claim of the granted scopes, not just sub.
    conformIdTokenClaims: false,
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    pkce: { required: () => true },
    // A refresh token for every code exchange, rotated on every use.
    issueRefreshToken: async (_ctx, c) => c.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    ttl: {
      AccessToken: accessTokenTTL,
      IdToken: idTokenTTL,
      RefreshToken: refreshTokenTTL,
      AuthorizationCode: 60,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    // Consent is automatic: the grant always covers what the client asks for.
    loadExistingGrant,
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    cookies: {
      keys: [randomBytes(32).toString('hex')],
      // Browsers and Go's cookie jar ignore ports, so the IdP and the proxy
      // (both on 127.0.0.1) share one cookie namespace: avoid generic names.
      names: {
        session: 'gatehouse_idp_session',
        interaction: 'gatehouse_idp_interaction',
        resume: 'gatehouse_idp_interaction_resume',
      },
    },
    features: {
      devInteractions: { enabled: false },
      revocation: {
        enabled: true,
        // Only the client a token was issued to may revoke it.
        allowedPolicy: async (_ctx, c, token) => token.clientId === c.clientId,
      },
      userinfo: { enabled: true },
      introspection: { enabled: false },
      claimsParameter: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource,
        postLogoutSuccessSource,
      },
    },
    // oidc-provider refuses to send back-channel requests to special-use
    // addresses such as 127.0.0.1 (SSRF protection). Everything here is on
    // loopback, so drop the protecting dispatcher.
    fetch: (url, options) => {
      const { dispatcher, ...rest } = options;
      return globalThis.fetch(url, rest);
    },
    renderError,
  };
}

async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
  }
  const scopes = [...oidc.requestParamOIDCScopes];
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  const claims = [...oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

async function logoutSource(ctx, form) {
  // form is oidc-provider's (empty) confirmation form; put the button inside
  // it so that plain HTML clients (and the Go helper) can submit it.
  const button = '<button type="submit" name="logout" value="yes">Yes, sign me out</button>';
  ctx.body = page('Sign out of the Gatehouse demo IdP', form.replace('</form>', `${button}</form>`));
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<p>You have been signed out of the Gatehouse demo IdP.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  const rows = Object.entries(out)
    .map(([k, v]) => `<p><strong>${escapeHtml(k)}</strong>: ${escapeHtml(v)}</p>`)
    .join('\n');
  ctx.body = page('Error', rows);
}

// ---- Interaction pages (Koa middleware) -----------------------------------

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function html(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = body;
}

async function interactions(ctx, next) {
  const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(ctx.path);
  if (!m) return next();
  const [, uid, isLogin] = m;
  const provider = ctx.app;

  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    return html(ctx, 400, page('Error', `<p>${escapeHtml(err.message)}. Start over from the application.</p>`));
  }
  if (details.uid !== uid) {
    return html(ctx, 400, page('Error', '<p>Interaction mismatch. Start over from the application.</p>'));
  }
  const { prompt } = details;

  if (ctx.method === 'GET' && !isLogin) {
    if (prompt.name === 'login') {
      return html(ctx, 200, loginPage(uid, details.params.login_hint || '', ''));
    }
    if (prompt.name === 'consent') {
      // Not expected (loadExistingGrant covers every request); grant anyway.
      const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      ctx.respond = false;
      return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
    }
    return html(ctx, 501, page('Error', `<p>Unsupported prompt ${escapeHtml(prompt.name)}.</p>`));
  }

  if (ctx.method === 'POST' && isLogin && prompt.name === 'login') {
    const form = await readForm(ctx.req);
    const login = form.get('login') || '';
    const sub = logins.get(login);
    const user = sub && accounts.get(sub);
    if (!user || user.password !== form.get('password')) {
      logLine('login user=%s result=bad_credentials', JSON.stringify(login));
      return html(ctx, 401, loginPage(uid, login, LOGIN_ERROR));
    }
    logLine('login user=%s result=ok', JSON.stringify(login));
    ctx.respond = false;
    return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: sub } }, { mergeWithLastSubmission: false });
  }

  return html(ctx, 405, page('Error', '<p>Method not allowed.</p>'));
}

// ---- Logging and test endpoints -------------------------------------------

const revocations = { AccessToken: 0, RefreshToken: 0, none: 0 };

async function observe(ctx, next) {
  if (ctx.method === 'GET' && ctx.path === '/_test/revocations') {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = revocations;
    return undefined;
  }

  await next();

  const route = ctx.oidc?.route;
  if (route === 'token') {
    const grantType = ctx.oidc.params?.grant_type ?? ctx.oidc.body?.grant_type ?? '-';
    const error = ctx.status >= 400 && ctx.body?.error ? ` error=${ctx.body.error}` : '';
    logLine('token grant_type=%s status=%d%s', grantType, ctx.status, error);
  } else if (route === 'revocation') {
    const { entities } = ctx.oidc;
    let revoked = 'none';
    if (entities.RefreshToken) revoked = 'RefreshToken';
    else if (entities.AccessToken) revoked = 'AccessToken';
    if (ctx.status === 200) revocations[revoked] += 1;
    const hint = ctx.oidc.params?.token_type_hint ?? '-';
    logLine('revocation token_type_hint=%s revoked=%s status=%d', hint, revoked, ctx.status);
  }
  return undefined;
}

// ---- Start -----------------------------------------------------------------

// The issuer contains the port, which is only known once listening (IDP_PORT=0),
// so the server starts with a placeholder handler and the provider is plugged
// in afterwards.
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = createServer((req, res) => handler(req, res));

server.on('error', (err) => fatal(`listen: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration());
  provider.use(observe);
  provider.use(interactions);
  provider.on('server_error', (_ctx, err) => logLine('server error: %s', err.stack || err));
  provider.on('backchannel.success', (_ctx, c, _accountId, sid) => {
    logLine('backchannel logout sent client_id=%s sid=%s', c.clientId, sid);
  });
  provider.on('backchannel.error', (_ctx, err, c, _accountId, sid) => {
    const message = err.cause ? `${err.message}: ${err.cause.message}` : err.message;
    logLine('backchannel logout failed client_id=%s sid=%s error=%s', c.clientId, sid, JSON.stringify(message));
  });
  handler = provider.callback();
  process.stdout.write(`READY ${issuer}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

if (process.env.IDP_EXIT_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
