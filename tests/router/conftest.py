"""Router test fixtures: profiles from models.yaml and a small trained checkpoint shared by the module."""

import pytest

from router.catalog import load_profile


@pytest.fixture(scope="session")
def tiny_profile():
    return load_profile("tiny")


@pytest.fixture(scope="session")
def local_profile():
    return load_profile("local")
