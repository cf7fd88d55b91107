"""OAuth 2 / OpenID Connect on authlib's own parts, one module per specification (as authlib is laid out).

| module | implements |
|---|---|
| :mod:`.rfc6749` | RFC 6749 grants: password (4.3), client credentials (4.4), code (4.1), refresh (6) |
| :mod:`.rfc7636` | RFC 7636 PKCE, S256 required of every client |
| :mod:`.rfc7662` | RFC 7662 token introspection |
| :mod:`.rfc7009` | RFC 7009 token revocation (a session at a time) |
| :mod:`.rfc8628` | RFC 8628 device authorization endpoint and grant |
| :mod:`.rfc8693` | RFC 8693 token exchange: break-glass (purpose of use BTG) and delegation (``act``) |
| :mod:`.rfc9068` | RFC 9068 JWT access tokens (authlib's ``JWTBearerTokenGenerator``) |
| :mod:`.oidc` | OpenID Connect Core 1.0 ID tokens and the code flow (authlib's ``OpenIDCode``) |
| :mod:`.models` | the clients, codes, tokens and device codes those pass around |
| :mod:`.collaborators` | what the grants need from the HIAL, as ``typing.Protocol``s |
| :mod:`.server` | the typed authorization server that holds them |
| :mod:`.errors` | our ``invalid_grant`` refusals (MFA required, locked) |
"""
