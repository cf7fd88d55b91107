"""One provider, one client, one executor: the discovery document fetched once, operations run on it.

:class:`OAuthClient` (sync, the CLI wrapper) and :class:`AsyncOAuthClient` (an agent's event loop)
differ only in how they wait; what is asked and how answers are read lives in the sans-I/O modules.
A discovery failure is not remembered: the next call tries again (the provider may be back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from .clientauth import ClientAuth
from .device import DeviceAuthorization, DevicePolling
from .discovery import ProviderMetadata, discovery
from .executors import AsyncExecutor, SyncExecutor, Timeouts
from .operation import Operation
from .token import TokenResponse

T = TypeVar("T")


class OAuthClient:
    def __init__(self, issuer: str, client: ClientAuth, executor: SyncExecutor, *, timeouts: Timeouts | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self.client = client
        self.timeouts = timeouts
        self._executor = executor
        self._sleep = sleep
        self._clock = clock
        self._metadata: ProviderMetadata | None = None

    def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            exchange = discovery(self.issuer)
            self._metadata = exchange.parse(self._executor.send(exchange.request, self.timeouts))
        return self._metadata

    def run(self, operation: Operation[T], timeouts: Timeouts | None = None) -> T:
        exchange = operation.exchange(self.metadata(), self.client)
        return exchange.parse(self._executor.send(exchange.request, timeouts or self.timeouts))

    def device_login(self, authorization: DeviceAuthorization) -> TokenResponse:
        """Poll until the user approves (RFC 8628 section 3.4); the codes decide, see :class:`DevicePolling`."""
        polling = DevicePolling(authorization, self._clock())
        while True:
            self._sleep(polling.delay(self._clock()))
            tokens = polling.answered(self.run(polling.grant))
            if tokens is not None:
                return tokens


class AsyncOAuthClient:
    def __init__(self, issuer: str, client: ClientAuth, executor: AsyncExecutor, *,
                 timeouts: Timeouts | None = None) -> None:
        self.issuer = issuer
        self.client = client
        self.timeouts = timeouts
        self._executor = executor
        self._metadata: ProviderMetadata | None = None
        self._discovering: asyncio.Lock | None = None

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            if self._discovering is None:
                self._discovering = asyncio.Lock()
            async with self._discovering:  # many associations at start-up: one discovery
                if self._metadata is None:
                    exchange = discovery(self.issuer)
                    self._metadata = exchange.parse(await self._executor.send(exchange.request, self.timeouts))
        return self._metadata

    async def run(self, operation: Operation[T], timeouts: Timeouts | None = None) -> T:
        exchange = operation.exchange(await self.metadata(), self.client)
        return exchange.parse(await self._executor.send(exchange.request, timeouts or self.timeouts))
