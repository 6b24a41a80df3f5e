// The lab's OpenID Connect provider: panva's certified oidc-provider with Okta's routes
// (<base>/v1/authorize, /v1/token, /v1/userinfo, /v1/keys), so Flower's OktaLoginHandler
// talks to it as to Okta. One confidential client (the dashboards) and a few users with
// passwords; a small login form stands in for Okta's sign-in page.
//
//   node provider.mjs CONFIG.json     (written 0600 by lab/oidc_provider.py)
//
// CONFIG: {issuer, host, port, cert, key, client: {id, secret, redirect_uri_pattern},
//          users: [{login, password, email}]}

import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const base = new URL(config.issuer).pathname.replace(/\/$/, ''); // e.g. /oauth2
const users = new Map(config.users.map((user) => [user.login, user]));
const redirectPattern = new RegExp(config.client.redirect_uri_pattern);

function sameSecret(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(String(expected));
  return a.length === b.length && timingSafeEqual(a, b);
}

const provider = new Provider(config.issuer, {
  clients: [
    {
      client_id: config.client.id,
      client_secret: config.client.secret,
      // every lab host's dashboard: checked against the pattern below
      redirect_uris: [config.client.example_redirect_uri],
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  routes: {
    authorization: '/v1/authorize',
    token: '/v1/token',
    userinfo: '/v1/userinfo',
    jwks: '/v1/keys',
    end_session: '/v1/logout',
    revocation: '/v1/revoke',
    introspection: '/v1/introspect',
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  scopes: ['openid', 'email'],
  features: { devInteractions: { enabled: false } },
  // Flower's Okta login sends no code_challenge: like Okta for a confidential web client (the
  // dashboards authenticate with their secret), PKCE is allowed but not required
  pkce: { methods: ['S256'], required: () => false },
  jwks: { keys: [generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' })] },
  // v9's default, which v8 lacks: the session cookie is sent on a top-level navigation (the
  // dashboards' redirect), not on another site's subrequest, and no SameSite-less legacy copy
  cookies: { keys: [randomBytes(32).toString('hex')], long: { httpOnly: true, sameSite: 'lax' } },
  interactions: { url: (ctx, interaction) => `${base}/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const user = users.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      claims: async () => ({ sub, email: user.email, email_verified: true }),
    };
  },
  // the dashboards are first-party: no consent screen, they get what they ask for
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email');
    await grant.save();
    return grant;
  },
});

const exactRedirect = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
  return redirectPattern.test(value) || exactRedirect.call(this, value);
};

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(res, uid, status, message) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(`<!doctype html><title>flowerbed lab sign-in</title>
<h1>flowerbed lab sign-in</h1>
<p id="message">${escapeHtml(message)}</p>
<form method="post" action="${base}/interaction/${escapeHtml(uid)}/login">
  <label>Username <input id="username" name="login" autocomplete="username" required></label>
  <label>Password <input id="password" name="password" type="password" required></label>
  <button id="sign-in" type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10_000) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

async function interaction(req, res, path) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt } = details;
  if (req.method === 'GET' && path === `/interaction/${uid}`) {
    if (prompt.name !== 'login') {
      // consent is granted by loadExistingGrant; anything else finishes as it is
      return provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
    }
    return loginPage(res, uid, 200, 'Sign in to reach the dashboard.');
  }
  if (req.method === 'POST' && path === `/interaction/${uid}/login`) {
    const form = await readForm(req);
    const user = users.get(form.get('login') || '');
    if (!user || !sameSecret(form.get('password') || '', user.password)) {
      console.log(`login refused for ${JSON.stringify(form.get('login'))}`);
      return loginPage(res, uid, 401, 'Wrong username or password.');
    }
    console.log(`login of ${user.login}`);
    return provider.interactionFinished(req, res, { login: { accountId: user.login } });
  }
  res.statusCode = 404;
  return res.end();
}

const callback = provider.callback();

const server = https.createServer(
  { cert: readFileSync(config.cert), key: readFileSync(config.key) },
  async (req, res) => {
    if (!req.url.startsWith(`${base}/`)) {
      res.statusCode = 404;
      return res.end();
    }
    const path = req.url.slice(base.length).split('?')[0];
    try {
      if (path.startsWith('/interaction/')) {
        return await interaction(req, res, path);
      }
      // oidc-provider finds its mount path from originalUrl (as under express's app.use)
      req.originalUrl = req.url;
      req.url = req.url.slice(base.length);
      return callback(req, res);
    } catch (error) {
      console.error(error);
      if (!res.headersSent) res.statusCode = 400;
      return res.end(String(error.message || error));
    }
  },
);

server.listen(config.port, config.host, () => {
  console.log(`oidc provider ${config.issuer} listening on ${config.host}:${config.port}`);
});
