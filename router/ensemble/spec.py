"""What a request asks an ensemble for: `router: {ensemble: {...}}` in the body, or a virtual model `ensemble-<mode>`;
checked against the profile's `ensemble` section, so a bad value is a clear 400 and never a surprise upstream."""

from __future__ import annotations

from dataclasses import dataclass

from router.catalog import ENSEMBLE_MODES, Ensemble

VIRTUAL_PREFIX = "ensemble-"
ASSESSMENTS = ("logprob", "json")
FIELDS = {"mode", "proposers", "layers", "max_tokens", "token_budget", "assessment", "score_gap", "early_stop"}


def virtual_model(mode: str) -> str:
    """`self_moa` -> `ensemble-self-moa`: model ids stay in the hyphenated style of the specialists."""
    return VIRTUAL_PREFIX + mode.replace("_", "-")


def mode_of_model(model: str) -> str | None:
    """The mode a virtual model names, None for any other model id."""
    if not model.startswith(VIRTUAL_PREFIX):
        return None
    return model.removeprefix(VIRTUAL_PREFIX).replace("-", "_")


@dataclass(frozen=True)
class EnsembleSpec:
    mode: str
    proposers: int
    layers: int
    max_tokens: int  # of every call but the final one
    token_budget: int | None
    score_gap: float  # routemoa: screening and aggregation keep what is within this of the best
    early_stop: float  # routemoa: a fused score at or above this answers at once
    assessment: str = "logprob"


def _int_field(raw: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = raw.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"router.ensemble.{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _fraction_field(raw: dict, name: str, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"router.ensemble.{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def parse(raw: object, model_mode: str | None, config: Ensemble, specialists: int) -> EnsembleSpec:
    """The request's ensemble, defaults filled from the profile (moa: every specialist proposes); ValueError with the
    reason for anything out of bounds."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"router.ensemble must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise ValueError(f"router.ensemble: unknown field(s) {unknown}; allowed: {sorted(FIELDS)}")
    mode = raw.get("mode", model_mode)
    if model_mode is not None and mode != model_mode:
        raise ValueError(f"model {virtual_model(model_mode)!r} and router.ensemble.mode {mode!r} disagree")
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"router.ensemble.mode must be one of {list(ENSEMBLE_MODES)}, got {mode!r}")
    if mode not in config.modes:
        raise ValueError(f"ensemble mode {mode!r} is not enabled on this deployment; enabled: {config.modes}")
    most = 3 if mode == "routemoa" else max(config.max_proposers, specialists if mode == "moa" else 0)  # RouteMoA: 3
    default = specialists if mode == "moa" else min(config.proposers, most)
    assessment = raw.get("assessment", "logprob")
    if assessment not in ASSESSMENTS:
        raise ValueError(f"router.ensemble.assessment must be one of {list(ASSESSMENTS)}, got {assessment!r}")
    return EnsembleSpec(
        mode=mode,
        proposers=_int_field(raw, "proposers", default, 1, most),
        layers=_int_field(raw, "layers", config.layers, 1, config.max_layers),
        max_tokens=_int_field(raw, "max_tokens", config.proposer_max_tokens, 1, config.proposer_max_tokens),
        token_budget=_int_field(raw, "token_budget", config.token_budget, 1, config.max_token_budget),
        assessment=assessment,
        score_gap=_fraction_field(raw, "score_gap", config.score_gap),
        early_stop=_fraction_field(raw, "early_stop", config.early_stop),
    )
