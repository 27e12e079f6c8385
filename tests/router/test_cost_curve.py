"""The cost-quality curve of `auto` on a graded matrix: the sweep runs the real policy, ends at the cheapest
specialist, beats random mixing when quality follows the roles, and names what is wrong with a bad matrix."""

import csv
import random

import pytest

from router.training import data
from router.training.cost_curve import cost_curve, plot


def write_matrix(path, rows, names):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "source", "domain", *names])
        for prompt, domain, outcomes in rows:
            writer.writerow([prompt, "test", domain, *outcomes])


@pytest.fixture(scope="module")
def role_shaped_matrix(tmp_path_factory, local_profile):
    """Code prompts only the dear coder gets right; general ones the cheap general model gets right too."""
    rng = random.Random(0)
    items = data.load()
    code = rng.sample([i for i in items if i["domain"] == "code"], 40)
    general = rng.sample([i for i in items if i["domain"] == "general"], 40)
    outcome = {"code": {"qwen-coder-1.5b": True, "qwen-coder-0.5b": False, "smollm2-135m": False},
               "general": {"qwen-coder-1.5b": True, "qwen-coder-0.5b": False, "smollm2-135m": True}}
    path = tmp_path_factory.mktemp("matrix") / "local.csv"
    names = local_profile.names
    write_matrix(path, [(i["prompt"], i["domain"], [outcome[i["domain"]][n] for n in names]) for i in code + general], names)
    return path


def test_auto_beats_random_mixing_when_quality_follows_roles(role_shaped_matrix, tmp_path):
    report = cost_curve(role_shaped_matrix, "local")
    assert (report["weak"], report["strong"]) == ("smollm2-135m", "qwen-coder-1.5b")
    assert report["apgr"]["random"] == 0.5
    assert report["apgr"]["auto_deployed"] > 0.6  # general prompts stay on the cheap model at no loss (perfect: 0.75)
    for points in report["curves"].values():
        assert points[-1]["cost"] == report["single"]["smollm2-135m"]["cost"]  # a huge cost weight: all on the cheapest
        assert sum(points[0]["mix"].values()) == report["n"] == 80
    plot(report, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_matrix_without_a_specialist_column_is_refused(tmp_path, local_profile):
    path = tmp_path / "partial.csv"
    write_matrix(path, [("What is 2 + 2?", "math", [True])], ["qwen-coder-0.5b"])
    with pytest.raises(ValueError, match="qwen-coder-1.5b"):
        cost_curve(path, "local")
