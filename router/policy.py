"""The `auto` policy: utility = quality weight x predicted quality - cost weight x cost - latency weight x latency.

- cost: (input_per_1k + output_per_1k) / the largest such price in the profile (0 if every price is 0), so the
  default weights in models.yaml (quality 1, cost 0.2, latency 0.1) read as "the most expensive specialist must
  be predicted at least 0.2 better than a free one";
- latency: expected latency / the profile's `router.latency_unit_s` -- absolute, not relative to the other
  specialists, so a specialist whose queue keeps growing keeps losing utility until another one wins.
  Expected latency = service time x max(1, (pending + 1) / capacity): a request that finds a free batch slot
  takes about the recent service time, one that queues waits for its share of the backlog. Service time is the
  live EWMA latency when serve/ reports one, otherwise the specialist's catalog speed over the expected answer
  (`unmeasured_service_s`: a 6.6 tok/s model is not as fast as a 50 tok/s one just because neither has answered
  yet; DEFAULT_SERVICE_S for a specialist without `decode_tok_s`), but never less than the mean age of
  the requests still in flight there: the EWMA learns only from finished requests, so without that floor a
  specialist that stalls (a hung engine finishes nothing) looks as fast as it last was until its requests time out.
  In steady state the mean age is about half the latency, so the floor stays out of the way until then.
  Capacity = replicas x slots per replica. Every signal serve/ could not read fresh is listed in `Load.defaults`,
  and so in the decision trace.
- a latency budget (`router: {"latency_budget_s": 5}`) ranks the specialists expected to meet it first (by
  utility), then the others; if none is expected to meet it the ranking is by utility alone and the trace says so.
Utilities within TIE_EPSILON count as tied; ties go to the less loaded specialist, then to the cheaper one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from router.catalog import Profile, RouterDefaults, Specialist

DEFAULT_SERVICE_S = 1.0
TIE_EPSILON = 1e-3


@dataclass(frozen=True)
class Weights:
    """Per-request knobs of the utility; defaults come from the profile's `router:` section (no budget by default)."""

    quality: float = 1.0
    cost: float = 0.2
    latency: float = 0.1
    latency_budget_s: float | None = None

    @classmethod
    def from_request(cls, raw: dict | None, defaults: RouterDefaults) -> Weights:
        """Overlay a request's `router: {...}` on the profile defaults; ValueError (-> HTTP 400) on bad input."""
        base = {name: float(getattr(defaults, name)) for name in WEIGHT_NAMES}
        if raw is None:
            return cls(**base)
        example = '{"quality": 1, "cost": 0.2, "latency": 0.1, "latency_budget_s": 10}'
        if not isinstance(raw, dict):
            raise ValueError(f"`router` must be an object like {example}, got {type(raw).__name__}")
        allowed = sorted(f.name for f in fields(cls))
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ValueError(f"unknown router field(s) {unknown}; allowed: {allowed}")
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"router.{key} must be a finite number >= 0, got {value!r}")
        if raw.get("latency_budget_s") == 0:
            raise ValueError("router.latency_budget_s must be > 0 seconds")
        return cls(**{**base, **{k: float(v) for k, v in raw.items()}})


WEIGHT_NAMES = ("quality", "cost", "latency")


@dataclass(frozen=True)
class Load:
    """One specialist's live load as serve/ sees it; the defaults describe an idle specialist of unknown speed."""

    in_flight: int = 0  # this router replica's requests to the specialist that have not finished
    serve_ongoing: int | None = None  # Ray Serve: requests at the specialist's replicas, from every router replica
    serve_queued: int | None = None  # Ray Serve: requests waiting in handles for a free replica
    replicas: int = 1  # healthy replicas (Ray Serve)
    slots_per_replica: int = 1  # requests one replica serves at once
    ewma_latency_s: float | None = None
    unmeasured_service_s: float = DEFAULT_SERVICE_S  # service time assumed while ewma_latency_s is None
    ewma_ttft_s: float | None = None
    in_flight_age_s: float | None = None  # mean age of this router's unfinished requests to the specialist
    defaults: tuple[str, ...] = ()  # signals that were missing or stale and fell back to a default

    @property
    def pending(self) -> int:
        """Requests ahead of a new one: this router's view, or Serve's if other router replicas add to it."""
        return max(self.in_flight, (self.serve_ongoing or 0) + (self.serve_queued or 0))

    def expected_latency_s(self) -> float:
        measured = self.ewma_latency_s if self.ewma_latency_s is not None else self.unmeasured_service_s
        service = max(measured, self.in_flight_age_s or 0.0)
        capacity = max(1, self.replicas) * max(1, self.slots_per_replica)
        return service * max(1.0, (self.pending + 1) / capacity)


def unmeasured_service_s(spec: Specialist, output_tokens: int) -> float:
    """A specialist's service time before any answer is measured: its catalog decode speed over the expected answer."""
    return output_tokens / spec.decode_tok_s if spec.decode_tok_s else DEFAULT_SERVICE_S


def mean_age_s(started: list[float], now: float) -> float | None:
    """`Load.in_flight_age_s` from the start times of the requests in flight; None when there are none."""
    return now - sum(started) / len(started) if started else None


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
    unit = profile.router.latency_unit_s
    budget = weights.latency_budget_s
    rows = {}
    for name in profile.names:
        latency_s = loads[name].expected_latency_s()
        utility = weights.quality * quality[name] - weights.cost * costs[name] - weights.latency * latency_s / unit
        rows[name] = {
            "quality": round(quality[name], 4),
            "cost": round(costs[name], 4),
            "expected_latency_s": round(latency_s, 4),
            "load": _load_row(loads[name]),
            "utility": round(utility, 4),
            **({"meets_budget": latency_s <= budget} if budget is not None else {}),
        }
    within = [n for n in profile.names if budget is not None and rows[n]["meets_budget"]]
    ranked = sorted(
        profile.names,
        key=lambda n: (bool(within) and n not in within, -round(rows[n]["utility"] / TIE_EPSILON), loads[n].pending, costs[n], n),
    )
    trace = {
        **(trace_extra or {}),
        "weights": asdict(weights),
        "specialists": rows,
        "ranked": ranked,
        "winner": ranked[0],
        "reason": _reason(ranked, rows, budget, bool(within)),
    }
    return Decision(ranked=ranked, trace=trace)


def _load_row(load: Load) -> dict:
    """The load as the trace shows it: only the signals that were read, plus the ones that fell back to defaults."""
    row = {k: v for k, v in asdict(load).items() if v is not None and k not in ("defaults", "unmeasured_service_s")}
    if load.defaults:
        row["defaults"] = list(load.defaults)
    return row


def _reason(ranked: list[str], rows: dict, budget: float | None, any_within: bool) -> str:
    winner, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    reason = f"{winner}: highest utility {rows[winner]['utility']}"
    if budget is not None:
        reason = f"{winner}: best expected within {budget:g} s" if any_within else f"none expected within {budget:g} s; {reason}"
    if runner_up is not None:
        reason += f" vs {runner_up} {rows[runner_up]['utility']}"
        if abs(rows[winner]["utility"] - rows[runner_up]["utility"]) < TIE_EPSILON:
            reason += " (tie broken by load, then cost)"
    return reason
