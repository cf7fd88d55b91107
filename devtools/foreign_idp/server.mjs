// A foreign OpenID provider for the tests (issue 14): panva's oidc-provider, certified and written
// by others, on loopback. It issues RFC 9068 JWT access tokens (typ at+jwt) for the resources its
// configuration names, by authorization code (the dev login form: no passwords, test use only),
// device code and client credentials. Usage: node server.mjs CONFIG.json; prints "issuer: URL".
//
// CONFIG: {"port": N, "clients": [RFC 7591 client metadata...], "accounts": {"ID": {claims}},
//          "resources": {"URI": {"scope": "a b", "ttl": 300}}, "default_resources": {"CLIENT": "URI"}}
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const accounts = config.accounts ?? {};
const resources = config.resources ?? {};
const signing = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: [{ ...signing, kid: config.kid ?? 'foreign-1', use: 'sig', alg: 'RS256' }] },
  findAccount: (ctx, id) => (accounts[id] ? { accountId: id, claims: () => ({ sub: id, ...accounts[id] }) } : undefined),
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'] },
  scopes: ['openid', 'offline_access', 'profile'],
  pkce: { required: () => false },
  ttl: { AccessToken: config.access_token_ttl ?? 300, ClientCredentials: 300, Session: 3600, Grant: 3600 },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client) => config.default_resources?.[client.clientId],
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        const resource = resources[indicator];
        if (!resource) throw new errors.InvalidTarget();
        return { scope: resource.scope, audience: indicator, accessTokenTTL: resource.ttl ?? 300,
                 accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  // The account's claims a resource server reads (user name, roles, organization) in the JWT itself.
  extraTokenClaims: (ctx, token) => (token.accountId && accounts[token.accountId]
    ? { preferred_username: token.accountId, ...accounts[token.accountId] } : undefined),
});

const server = provider.listen(config.port, '127.0.0.1', () => { console.log(`issuer: ${issuer}`); });
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
