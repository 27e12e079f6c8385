"""The fault suite on a real tiny cluster (cluster/reliability): every fault injected for real under mixed traffic with
long streams in flight, every request of its window ended by the contract, the cluster recovered; then a short soak."""

import asyncio
import json
from collections.abc import Iterator

import pytest

from cluster.local import LocalCluster
from cluster.reliability.faults import FAULTS, FaultResult, Suite, run_fault
from cluster.reliability.soak import soak
from router.catalog import load_profile

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def suite() -> Iterator[Suite]:
    with LocalCluster("tiny", ready_timeout_s=600, observe=False) as cluster:
        yield Suite(cluster.base_url, load_profile("tiny"), cluster.cache_dir / "serve-tiny.yaml")


def explain(result: FaultResult) -> str:
    return json.dumps(vars(result), indent=1)


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_fault_loses_nothing_and_the_cluster_recovers(suite: Suite, name: str):
    result = asyncio.run(run_fault(suite, name))
    assert result.passed, explain(result)


def test_a_soak_with_faults_loses_nothing_and_does_not_grow(suite: Suite):
    report = asyncio.run(soak(suite, minutes=3, fault_every_s=60))
    assert report["lost"] == report["truncated_streams"] == report["server_errors"] == 0, json.dumps(report, indent=1)
    assert len(report["faults"]) >= 2 and all(f["passed"] for f in report["faults"]), report["faults"]
    assert report["rss_growth_mb"] < 200, report["rss_mb"]
