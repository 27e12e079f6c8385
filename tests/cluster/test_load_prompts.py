"""The load test sends only prompts every specialist it may reach can take, so a step never draws a 400."""

import pytest

from cluster.loadtest.prompts import WindowFit, mixed_prompts
from cluster.prepare import prepare_profile
from router.catalog import default_cache_dir, load_catalog


@pytest.fixture(scope="module")
def tiny_specialists():
    """The tiny profile's specialists, their tokenizers prepared (seconds; shared with the tiny cluster's start)."""
    catalog = load_catalog()
    prepare_profile("tiny", catalog, default_cache_dir())
    return catalog.profile("tiny").specialists


def test_every_prompt_leaves_room_to_answer_in_the_smallest_window_and_only_overlong_ones_are_cut(tiny_specialists):
    smallest = min(tiny_specialists, key=lambda s: s.context_window)
    fit = WindowFit(smallest, default_cache_dir(), max_tokens=32)
    uncut = mixed_prompts(400, 0, [], default_cache_dir(), max_tokens=32)
    fitted = mixed_prompts(400, 0, tiny_specialists, default_cache_dir(), max_tokens=32)
    assert [p["domain"] for p in fitted] == [p["domain"] for p in uncut]
    overlong = 0
    for before, after in zip(uncut, fitted):
        tokens = fit.chat_tokens(after["prompt"])
        assert tokens <= fit.room
        if fit.chat_tokens(before["prompt"]) <= fit.room:
            assert after == before  # what fits goes whole: the workload stays the size the run asked for
        else:
            overlong += 1
            assert tokens >= fit.room - 4  # cut at the window, not far short of it
    assert overlong, "no prompt needed cutting: the test would not show the fit"


def test_a_window_too_small_for_any_prompt_is_refused_up_front(tiny_specialists):
    with pytest.raises(ValueError, match="no room"):
        WindowFit(tiny_specialists[0], default_cache_dir(), max_tokens=tiny_specialists[0].context_window)
