from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.hial import HialProcess


@pytest.fixture(scope="module")
def hial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HialProcess]:
    server = HialProcess(tmp_path_factory.mktemp("hial"), server={"device_poll_interval": 1},
                         lockout={"max_failures": 50, "slow_after": 50}).start()
    yield server
    server.stop()
