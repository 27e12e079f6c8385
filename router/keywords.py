"""The keyword baseline: role scores from hand-picked words, used as an eval baseline and as the router's
documented fallback when no usable checkpoint is found (every trace then says `scorer: keyword-fallback`)."""

from __future__ import annotations

import re

import torch

from router.catalog import ROLES

KEYWORDS = {
    "coder": ["python", "function", "code", "program", "algorithm", "array", "string", "class", "def", "return",
              "sql", "javascript", "java", "c++", "rust", "bug", "compile", "implement", "linked list",
              "binary tree", "script", "api", "regex", "debug", "software", "computer"],
    "math": ["solve", "equation", "integer", "sum", "probability", "calculate", "how many", "how much", "percent",
             "triangle", "polynomial", "derivative", "integral", "prime", "matrix", "remainder", "ratio",
             "average", "fraction", "theorem", "math"],
    "biomedical": ["patient", "disease", "symptom", "medical", "clinical", "cell", "protein", "gene", "drug",
                   "treatment", "blood", "infection", "virus", "anatomy", "diagnosis", "doctor", "pain", "health",
                   "syndrome", "nerve", "muscle", "dose", "vitamin", "tissue", "organ", "bacteria"],
}
_PATTERNS = {role: re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.I) for role, words in KEYWORDS.items()}


def keyword_role_probs(texts: list[str]) -> torch.Tensor:
    """(n, len(ROLES)) scores: keyword hit shares per role; no hit at all means `general`."""
    out = torch.zeros(len(texts), len(ROLES))
    for i, text in enumerate(texts):
        hits = torch.tensor([float(len(_PATTERNS[r].findall(text))) if r in _PATTERNS else 0.0 for r in ROLES])
        out[i] = hits / hits.sum() if hits.sum() > 0 else torch.tensor([float(r == "general") for r in ROLES])
    return out
