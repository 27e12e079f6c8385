"""Shared fixtures: a real local Ray cluster serving the `tiny` profile on 127.0.0.1 per test module (one Ray cluster at a time)."""

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_url() -> Iterator[str]:
    """Base URL of the router serving the tiny profile; ROUTER_TEST_BASE_URL reuses a cluster you already run."""
    if url := os.environ.get("ROUTER_TEST_BASE_URL"):
        yield url
        return
    from cluster.local import LocalCluster

    with LocalCluster("tiny", ready_timeout_s=600, observe=False) as cluster:
        yield cluster.base_url
