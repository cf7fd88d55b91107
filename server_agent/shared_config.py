"""``[shared]``: where the server agent's workers and instances keep what they share (:mod:`.shared`)."""

from __future__ import annotations

from pydantic import field_validator

from tomlconf.schema import ExistingFile, PositiveFloat, RelPath, Schema


class SharedSection(Schema):
    """``redis``: ``redis://HOST:PORT/DB`` or ``rediss://`` (TLS; ``ca_file``, and ``certificate`` with
    ``key`` for a server that requires client certificates); the password, if any, is read from
    ``password_file`` (never written in the configuration). Without ``redis``: one process only."""

    redis: str | None = None
    username: str | None = None  # the agents' Redis ACL user (docs/deployment-ha.md); None: "default"
    password_file: RelPath | None = None
    ca_file: ExistingFile | None = None
    certificate: ExistingFile | None = None
    key: ExistingFile | None = None
    # Every key begins with this: sites sharing one Redis never see each other's moves. Default:
    # ``dia:SITE:`` ([server] site, else [server] name).
    prefix: str = ""
    timeout: PositiveFloat = 1.0  # seconds for one operation: past it, the store is unreachable (refuse)

    @field_validator("redis")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if value is not None and "@" in value.partition("://")[2].partition("/")[0]:
            raise ValueError("must not carry a user or password: use username and password_file")
        return value


__all__ = ["SharedSection"]
