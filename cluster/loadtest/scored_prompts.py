"""The trained scorer's predicted quality per specialist for dataset prompts, cached on disk per prompt.

The simulator and the load test both judge policies by the quality they deliver; scoring thousands of prompts
with the encoder is the slow part, so each prompt is scored once per profile and checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from router.catalog import Profile


def predicted_quality(profile: Profile, prompts: list[str], cache: Path) -> list[dict[str, float]]:
    """The trained scorer's quality per specialist for each prompt; cached per prompt, since scoring is the slow part
    (keyed by the deployed checkpoint's bytes too, so retraining it never reuses the old scores)."""
    from router.scorer import DEFAULT_CHECKPOINT

    scorer = hashlib.sha256(DEFAULT_CHECKPOINT.read_bytes() if DEFAULT_CHECKPOINT.exists() else b"").digest()
    key = hashlib.sha256(json.dumps(profile.names).encode() + scorer).hexdigest()[:12]
    path = cache / "simulate" / f"quality-{key}.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    keys = [hashlib.sha1(p.encode()).hexdigest() for p in prompts]
    missing = sorted({k: p for k, p in zip(keys, prompts) if k not in known}.items())
    if missing:
        from router.routing import Router

        router = Router.from_profile(profile)
        for start in range(0, len(missing), 64):
            batch = missing[start : start + 64]
            roles, models = router.predict([p for _, p in batch])
            known.update({k: router.specialist_quality(r, m) for (k, _), r, m in zip(batch, roles, models)})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
    return [known[k] for k in keys]
