"""The pseudonymisation service: per-project keys, pseudonyms, the way back, and audited re-identification.

A separate process (``pseudonymizer serve``), loopback by default, TLS optional, that alone holds the
HMAC-SHA-256 key of each pseudonymisation scope (:mod:`.keys`) and the reverse mapping
(:mod:`.store`). Callers authenticate with access tokens of the HIAL (RFC 9068, audience
``pseudonymizer``, :mod:`.tokens`): the server agent with its own client-credentials token to get and
translate pseudonyms in batches, a trustee with a user token and role to re-identify one pseudonym at
a time, stating why. Every answer goes to the service's own access log (:mod:`.accesslog`).

| module | does |
|---|---|
| :mod:`.derive` | the keyed functions: Patient ID, name, UID, date offset |
| :mod:`.app` | the HTTP API (see its table) and the composition root |
| :mod:`.client` | the Python client (async for the server agent, sync for the CLI and tests) |
| :mod:`.config` | the TOML configuration |
| :mod:`.cli` | ``serve``, ``check-config``, ``reidentify`` |
"""
