"""Role-routing evaluation: top-1/top-3 hit rates per domain, confusion, scoring cost, and baselines
(random, majority, keyword, kNN), either for a checkpoint on a prompt file or leave-sources-out on the data."""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable

import torch

from router.catalog import ROLES
from router.training.data import DOMAINS, ROLE_DOMAIN, source_fold
from router.encoder import MiniLMEncoder
from router.keywords import keyword_role_probs
from router.scorer import Scorer, knn_probs, reference_set, role_probs
from router.training.train import FitConfig, fit_head, role_targets

DOMAIN_OF_ROLE_INDEX = [ROLE_DOMAIN[r] for r in ROLES]
COST_SAMPLE = 2048  # prompts (a fixed random sample of the dataset) timed for the scoring cost


def hit_rates(probs: torch.Tensor, domains: list[str]) -> dict:
    """n, top1, top3, per_domain top-1 and the confusion counts (true domain -> predicted domain -> n)."""
    truth = role_targets(domains)
    order = probs.argsort(dim=1, descending=True)
    top1 = order[:, 0] == truth
    top3 = (order[:, :3] == truth[:, None]).any(1)
    confusion = {d: dict.fromkeys(DOMAINS, 0) for d in DOMAINS}
    for t, p in zip(truth.tolist(), order[:, 0].tolist()):
        confusion[DOMAIN_OF_ROLE_INDEX[t]][DOMAIN_OF_ROLE_INDEX[p]] += 1
    per_domain = {}
    for d in DOMAINS:
        mask = torch.tensor([x == d for x in domains])
        if mask.any():
            per_domain[d] = round(top1[mask].float().mean().item(), 4)
    return {"n": len(domains), "top1": round(top1.float().mean().item(), 4), "top3": round(top3.float().mean().item(), 4),
            "per_domain": per_domain, "confusion": confusion}


def one_hot(indices: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(indices, dtype=torch.long), len(ROLES)).float()


def baselines(train_x, train_roles, test_x, test_texts, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = random.Random(seed)
    majority = Counter(train_roles.tolist()).most_common(1)[0][0]
    return {
        "random": torch.rand(len(test_texts), len(ROLES), generator=torch.Generator().manual_seed(rng.randrange(2**31))),
        "majority": one_hot([majority] * len(test_texts)),
        "keyword": keyword_role_probs(test_texts),
        "knn": knn_probs(train_x, train_roles, test_x),  # k = KNN_K, the same vote the scorer averages in
    }


def fold_of_source(sources: set[str], folds: int) -> dict[str, int]:
    """Each source's held-out fold: its stable hash group of `folds`, or with folds=0 a fold of its own
    (leave-one-source-out: 67 fits instead of 10, and every held-out source keeps all the others to learn from)."""
    if folds == 0:
        return {source: fold for fold, source in enumerate(sorted(sources))}
    return {source: source_fold(source, folds) for source in sources}


def leave_sources_out(items: list[dict], folds: int = 0, config: FitConfig = FitConfig(),
                      encoder_for: Callable[[set[str]], MiniLMEncoder] | None = None) -> dict:
    """Every source (MMLU subject, benchmark) lands in a fold (`fold_of_source`); each fold is predicted by a scorer
    (head ensemble + kNN vote, as `Scorer.predict` combines them) and baselines built from the other folds only.
    Encoders are frozen, so each one's embeddings are computed once: the deployed one for every fold by default,
    or `encoder_for(held-out sources)` (a cheaper variant, or a student that never saw those sources' prompts)."""
    texts = [i["prompt"] for i in items]
    domains = [i["domain"] for i in items]
    roles = role_targets(domains)
    sources = [i["source"] for i in items]
    fold_of = fold_of_source(set(sources), folds)
    fold_of_item = torch.tensor([fold_of[s] for s in sources])
    if encoder_for is None:
        deployed = MiniLMEncoder()
        encoder_for = lambda held_out: deployed  # noqa: E731
    features_of: dict[str, torch.Tensor] = {}
    predictions = {name: torch.zeros(len(items), len(ROLES)) for name in ("router", "random", "majority", "keyword", "knn")}
    fold_count = max(fold_of.values()) + 1
    for fold in range(fold_count):
        test = fold_of_item == fold
        if not test.any():
            continue
        fold_encoder = encoder_for({s for s, f in fold_of.items() if f == fold})
        if fold_encoder.info["features"] not in features_of:
            features_of[fold_encoder.info["features"]] = fold_encoder.encode_cached(texts)
        features = features_of[fold_encoder.info["features"]]
        train_idx, test_idx = (~test).nonzero().flatten(), test.nonzero().flatten()
        head = fit_head(features[train_idx], roles[train_idx], config=config, groups=[sources[i] for i in train_idx])
        with torch.inference_mode():
            reference = reference_set(features[train_idx], roles[train_idx])
            predictions["router"][test_idx] = role_probs(head(features[test_idx])[0], features[test_idx], reference)
        test_texts = [texts[i] for i in test_idx]
        for name, probs in baselines(features[train_idx], roles[train_idx], features[test_idx], test_texts, fold).items():
            predictions[name][test_idx] = probs
        print(f"fold {fold + 1}/{fold_count}: {len(test_idx)} held-out items", flush=True)
    router = predictions.pop("router")
    report = hit_rates(router, domains)
    report["protocol"] = (f"leave-one-source-out: {len(fold_of)} sources, one fold each" if folds == 0 else
                          f"leave-sources-out: {len(fold_of)} sources in {fold_count} source-disjoint folds")
    picked = router.argmax(1)
    report["per_source_top1"] = per_source_top1(sources, picked == roles)
    report["per_source_misses"] = per_source_misses(sources, domains, picked.tolist())
    report["baselines"] = {name: hit_rates(p, domains) for name, p in predictions.items()}
    for name, result in report["baselines"].items():
        report[name] = {k: result[k] for k in ("top1", "top3", "per_domain")}
    return report


def per_source_top1(sources: list[str], hits: torch.Tensor) -> dict[str, float]:
    """Top-1 per held-out source, worst first: where the router generalises least."""
    totals, correct = Counter(sources), Counter(s for s, h in zip(sources, hits.tolist()) if h)
    return dict(sorted(((s, round(correct[s] / n, 4)) for s, n in totals.items()), key=lambda kv: kv[1]))


def per_source_misses(sources: list[str], domains: list[str], predicted: list[int]) -> dict[str, dict[str, int]]:
    """Where each held-out source's misses went ("true -> predicted": n): a relabel's effect tells apart from drift."""
    misses: dict[str, Counter] = {}
    for source, domain, p in zip(sources, domains, predicted):
        if DOMAIN_OF_ROLE_INDEX[p] != domain:
            misses.setdefault(source, Counter())[f"{domain} -> {DOMAIN_OF_ROLE_INDEX[p]}"] += 1
    return {s: dict(c.most_common()) for s, c in sorted(misses.items(), key=lambda kv: -kv[1].total())}


def cost_sample(items: list[dict]) -> list[str]:
    """The fixed random sample of dataset prompts that every scoring-cost figure is timed on."""
    return random.Random(0).sample([i["prompt"] for i in items], min(COST_SAMPLE, len(items)))


def scoring_cost(scorer: Scorer, texts: list[str], singles: int = 300, batch_size: int = 256) -> dict:
    """p50 latency of scoring one prompt at a time, and throughput of scoring them in batches."""
    scorer.predict(texts[:8])
    latencies = []
    for text in texts[:singles]:
        start = time.perf_counter()
        scorer.predict([text])
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        scorer.predict(texts[i : i + batch_size])
    elapsed = time.perf_counter() - start
    return {"latency_ms_p50_single": round(statistics.median(latencies) * 1000, 3),
            "latency_ms_p99_single": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1000, 3),
            "throughput_qps_batched": round(len(texts) / elapsed, 1), "batch_size": batch_size, "threads": torch.get_num_threads()}


def evaluate_file(rows: list[dict], scorer: Scorer, reference: list[dict]) -> dict:
    """A checkpoint on a prompt file; kNN and majority use the built dataset as their reference set."""
    texts = [r["prompt"] for r in rows]
    domains = [r["domain"] for r in rows]
    role_probs, _ = scorer.predict(texts)
    report = hit_rates(role_probs, domains)
    report.update(scoring_cost(scorer, texts))
    ref_x = scorer.encoder.encode_cached([r["prompt"] for r in reference])
    ref_roles = role_targets([r["domain"] for r in reference])
    for name, probs in baselines(ref_x, ref_roles, scorer.encoder.encode(texts), texts).items():
        report[name] = {k: v for k, v in hit_rates(probs, domains).items() if k in ("top1", "top3", "per_domain")}
    report["scorer"] = scorer.name
    return report
