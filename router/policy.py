"""The `auto` policy: utility = quality weight x predicted quality - cost weight x cost - latency weight x latency.

Both penalty terms are normalised to [0, 1] across the profile's specialists so the default weights in
models.yaml (quality 1, cost 0.2, latency 0.1) read as "a specialist must be predicted at least 0.2 better to
justify being the most expensive one":
- cost: (input_per_1k + output_per_1k) / the largest such price in the profile (0 if every price is 0);
- latency: expected latency / the largest expected latency in the profile, where expected latency =
  (in_flight + queued + 1) x service time, the service time being the live EWMA latency when serve/ reports
  one and DEFAULT_SERVICE_S otherwise. With no load reported every specialist gets the same latency term.
Utilities within TIE_EPSILON count as tied; ties go to the less loaded specialist, then to the cheaper one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from router.catalog import Profile, RouterDefaults

DEFAULT_SERVICE_S = 1.0
TIE_EPSILON = 1e-3


@dataclass(frozen=True)
class Weights:
    """Per-request knobs of the utility; defaults come from the profile's `router:` section."""

    quality: float = 1.0
    cost: float = 0.2
    latency: float = 0.1

    @classmethod
    def from_request(cls, raw: dict | None, defaults: RouterDefaults) -> Weights:
        """Overlay a request's `router: {...}` on the profile defaults; ValueError (-> HTTP 400) on bad input."""
        base = {f.name: float(getattr(defaults, f.name)) for f in fields(cls)}
        if raw is None:
            return cls(**base)
        example = '{"quality": 1, "cost": 0.2, "latency": 0.1}'
        if not isinstance(raw, dict):
            raise ValueError(f"`router` must be an object like {example}, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(base))
        if unknown:
            raise ValueError(f"unknown router weight(s) {unknown}; allowed: {sorted(base)}")
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"router.{key} must be a finite number >= 0, got {value!r}")
        return cls(**{**base, **{k: float(v) for k, v in raw.items()}})


@dataclass(frozen=True)
class Load:
    """One specialist's live load as serve/ sees it; absent means idle with unknown latency."""

    in_flight: int = 0
    queued: int = 0
    ewma_latency_s: float | None = None

    @property
    def pending(self) -> int:
        return self.in_flight + self.queued

    def expected_latency_s(self) -> float:
        return (self.pending + 1) * (self.ewma_latency_s or DEFAULT_SERVICE_S)


@dataclass
class Decision:
    ranked: list[str]
    trace: dict

    @property
    def winner(self) -> str:
        return self.ranked[0]


def normalised_costs(profile: Profile) -> dict[str, float]:
    prices = {s.name: s.cost.input_per_1k + s.cost.output_per_1k for s in profile.specialists}
    top = max(prices.values())
    return {name: (price / top if top > 0 else 0.0) for name, price in prices.items()}


def rank(
    profile: Profile,
    quality: Mapping[str, float],
    weights: Weights,
    load: Mapping[str, Load] | None = None,
    trace_extra: dict | None = None,
) -> Decision:
    """Rank every specialist of the profile by utility and explain the ranking in a JSON-serialisable trace."""
    load = load or {}
    costs = normalised_costs(profile)
    loads = {name: load.get(name, Load()) for name in profile.names}
    latency = {name: loads[name].expected_latency_s() for name in profile.names}
    slowest = max(latency.values())
    rows = {}
    for name in profile.names:
        latency_norm = latency[name] / slowest
        utility = weights.quality * quality[name] - weights.cost * costs[name] - weights.latency * latency_norm
        rows[name] = {
            "quality": round(quality[name], 4),
            "cost": round(costs[name], 4),
            "expected_latency_s": round(latency[name], 4),
            "latency": round(latency_norm, 4),
            "load": asdict(loads[name]),
            "utility": round(utility, 4),
        }
    ranked = sorted(
        profile.names,
        key=lambda n: (-round(rows[n]["utility"] / TIE_EPSILON), loads[n].pending, costs[n], n),
    )
    winner, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    reason = f"{winner}: highest utility {rows[winner]['utility']}"
    if runner_up is not None:
        reason += f" vs {runner_up} {rows[runner_up]['utility']}"
        if abs(rows[winner]["utility"] - rows[runner_up]["utility"]) < TIE_EPSILON:
            reason += " (tie broken by load, then cost)"
    trace = {
        **(trace_extra or {}),
        "weights": asdict(weights),
        "specialists": rows,
        "ranked": ranked,
        "winner": winner,
        "reason": reason,
    }
    return Decision(ranked=ranked, trace=trace)
