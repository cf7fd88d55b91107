"""``[admin]`` of both agents: the admin listener (``/healthz``, ``/readyz``, ``/metrics``; issue 15 item 3).

Off unless ``listen`` is given. It speaks plain HTTP/1.1 without authentication, so it listens on
loopback unless ``expose = true`` says that the address was chosen on purpose (a monitoring network,
behind a firewall: see ``docs/monitoring.md``); it never answers anything secret either way.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .schema import LOOPBACK, HostPort, PositiveFloat, PositiveInt, Schema, derived, problem


class AdminSection(Schema):
    listen: HostPort
    # Required to listen anywhere but loopback: an unauthenticated listener on a hospital network is a
    # decision, not a default (its answers hold no secret, but they describe the agent's load).
    expose: bool = False
    # Seconds a readiness check's result is reused: a load balancer checking every second costs the
    # identity provider and the PDP one request each per this many seconds, not one per check.
    check_interval: PositiveFloat = 5.0
    # Audit messages waiting in the spool above which the agent is not ready (the audit record
    # repository has been unreachable for a long time: a readiness alert before the disk fills).
    max_audit_spool: PositiveInt = 10_000
    # [server] workers = N: worker I also answers alone on port worker_ports + I (same host), its own
    # /metrics to scrape: each worker keeps its own counters, and ``listen`` reaches any one of them.
    worker_ports: int | None = Field(default=None, ge=1, le=65535)
    worker: int | None = derived(None)  # which worker this process is (set by the supervisor)

    @property
    def worker_listen(self) -> tuple[str, int] | None:
        """This worker's own address, if it is a worker and ``worker_ports`` is set."""
        if self.worker is None or self.worker_ports is None:
            return None
        return self.listen[0], self.worker_ports + self.worker

    @model_validator(mode="after")
    def _loopback(self) -> AdminSection:
        if self.listen[0] not in LOOPBACK and not self.expose:
            raise problem("listen", f"{self.listen[0]} is not loopback: the admin listener has no authentication; "
                                    "set expose = true to listen there on purpose")
        return self


__all__ = ["AdminSection"]
