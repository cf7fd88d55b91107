from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.hial import HialProcess


@pytest.fixture(scope="module")
def hial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HialProcess]:
    server = HialProcess(tmp_path_factory.mktemp("hial"), server={"device_poll_interval": 1},
                         lockout={"max_failures": 3, "slow_after": 50, "lock_seconds": 60}).start()
    yield server
    server.stop()


@pytest.fixture()
def fresh_hial(tmp_path: Path) -> Iterator[HialProcess]:
    server = HialProcess(tmp_path / "hial", server={"access_token_lifetime": 2, "device_poll_interval": 1}).start()
    yield server
    server.stop()
