"""Short runs of ``make bench``'s rows of issue 15 on real parts, so that a change that breaks one is
seen by ``make test`` and not first in a benchmark run: each agent's CPU against the stunnel process
on its side (storescu's and storescp's CPU read per run), association set-up + C-ECHO to the response,
one server-agent host with workers = 2 against workers = 1, and many concurrent associations held
open and idle through both agents (the site configured past the per-source bounds of issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import idle_bench, server_bench, workers_bench
from bench.stats import Measure
from devtools.dicomdata import make_ct_study
from devtools.peers import StoreSCP
from devtools.redis_server import REDIS_SERVER
from dicomwire.limits import RelayLimits
from tests.support.wire import pynetdicom_rq


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_ct_study(tmp_path_factory.mktemp("bench-study"), slices=4, size=128, patient_id="BENCH001")


def test_a_store_round_reads_the_cpu_of_storescu_and_of_each_process_on_the_path(tmp_path: Path,
                                                                                files: list[Path]) -> None:
    scp = StoreSCP(tmp_path / "in", aet="ORTHANC", ignore=True).start()
    try:
        assert scp.process is not None
        measure = Measure("direct", [])
        server_bench.store_round(measure, scp.port, files, "ORTHANC", {"storescp": scp.process.pid})
        echoed, released = server_bench.echo_phases(scp.port, pynetdicom_rq(called="ORTHANC", calling="BENCH"))
    finally:
        scp.stop()
    assert len(measure.samples) == 1 and set(measure.cpu) == {"storescp", "storescu"}
    assert measure.cpu_median("storescu") > 0  # DCMTK's start-up alone costs milliseconds
    assert 0 < echoed < released < 10


def test_more_concurrent_associations_than_one_source_may_have_pending_all_succeed(tmp_path: Path) -> None:
    count = RelayLimits().max_pending_per_source + 16  # the default per-source bound would close some at once
    data = idle_bench.run(tmp_path, quick=True, count=count, routes=("GW1",))
    text, out = idle_bench.report(data)
    assert data["bursts"]["GW1"]["failures"] == [], data["bursts"]["GW1"]["failures"][:3]
    assert out["GW1"]["open_idle"] == count and out["GW1"]["failures"] == 0
    assert f"| {count}, TLS between the agents (held {count}) | 0 |" in text
    assert set(out["GW1"]["kib_per_idle_association"]) == {"workstation agent", "server agent"}


@pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server missing: run `make test`")
def test_workers_row_spreads_concurrent_clients_over_both_workers(tmp_path: Path, files: list[Path]) -> None:
    data = workers_bench.run(tmp_path, files, quick=True)
    text, out = workers_bench.report(data)
    two = out["paths"][f"server agent, workers = 2, {workers_bench.CLIENTS} clients (TLS)"]
    assert len(two["worker_split"].split(" / ")) == 2  # both workers were found under the supervisor
    assert all(p["mb_per_s"] > 0 for p in out["paths"].values()) and out["scaling"] > 0
    assert "Scaling, workers = 2 against workers = 1" in text
