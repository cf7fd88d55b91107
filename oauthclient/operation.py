"""What the executors run: an operation, built against the provider's metadata and the client."""

from __future__ import annotations

from typing import Protocol, TypeVar

from .clientauth import ClientAuth
from .discovery import ProviderMetadata
from .http import Exchange

T_co = TypeVar("T_co", covariant=True)


class Operation(Protocol[T_co]):
    """A frozen value naming one request to an endpoint the discovery document lists."""

    def exchange(self, metadata: ProviderMetadata, client: ClientAuth) -> Exchange[T_co]: ...
