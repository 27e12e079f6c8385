"""The trained scorer: MiniLM features -> an ensemble of small MLPs with a role head (the prior) and per-model
outcome heads, plus a k-nearest-neighbour vote over the training prompts' embeddings for the roles.

Role probabilities = the mean of the heads' softmax averaged 50/50 with the share of the K nearest training
prompts (cosine) per role. Leave-sources-out the two disagree on different prompts, and the average beats both
(docs/router/README.md). Per-model quality comes from the heads; in a checkpoint trained on outcome files, it is the
heads averaged with the outcome rows' kNN mean and a ridge probe on them (`OutcomeBlend`, kept inline in the
checkpoint: the rows are the operator's, not a pinned dataset).

The kNN vote searches its reference in bfloat16 (half the bytes read per prompt as float32; leave-sources-out
top-1 moved by 0.04 points, docs/router/README.md).

A checkpoint is one torch file holding the heads' weights, the encoder it expects (the encoder comes from the
installed package; a student's trained layers, when the scorer uses one, are in the checkpoint), how it was
trained, and which training rows make up the kNN reference. The reference's embeddings are not shipped: they are
rebuilt from the pinned dataset into `.cache/router/knn/` (by `train` itself, or `python -m router prepare`), keyed
by the encoder and a digest of those rows. `Scorer.load` builds the encoder, refuses a mismatched one passed in and
refuses to run without its reference, naming the command that builds it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from router.catalog import ROLES, default_cache_dir
from router.encoder import MiniLMEncoder

CHECKPOINT_FORMAT = 4  # 4: kNN reference rebuilt from its rows (+ optional calibration, outcome blend); 3: reference
# inline; 2: one head
KNN_K = 10  # neighbours in the role vote (the kNN baseline's k)
FEATURE_SCALE = 10.0  # unit-norm features are tiny per coordinate; this keeps the first layer's inputs O(1)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "scorer-v1.pt"


class QualityHead(nn.Module):
    """Shared trunk; one softmax over roles and one sigmoid per known model (P(that model answers well))."""

    def __init__(self, in_dim: int, hidden: int, n_models: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.roles = nn.Linear(hidden, len(ROLES))
        self.models = nn.Linear(hidden, n_models)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits: (n, roles) and (n, models)."""
        h = self.trunk(x * FEATURE_SCALE)
        return self.roles(h), self.models(h)


class HeadEnsemble(nn.Module):
    """QualityHeads trained from different seeds. `forward` returns the log of their mean role probabilities and
    the logit of their mean per-model probabilities, so callers apply softmax / sigmoid exactly as to one head."""

    def __init__(self, heads: list[QualityHead]) -> None:
        super().__init__()
        self.members = nn.ModuleList(heads)

    @property
    def hidden(self) -> int:
        return self.members[0].roles.in_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [head(x) for head in self.members]
        roles = torch.stack([r.softmax(-1) for r, _ in outputs]).mean(0)
        models = torch.stack([m.sigmoid() for _, m in outputs]).mean(0)
        return roles.log(), torch.logit(models, eps=1e-6)


class Calibration(NamedTuple):
    """Per-model Platt scaling of the heads' quality logits, fitted on held-out outcomes (router/training/train.py)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.scale + self.shift


def knn_outcomes(train_x: torch.Tensor, train_y: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """Per model, the mean observed score (NaN = ungraded) of the k nearest outcome rows (cosine on unit vectors)."""
    nearest = (x @ train_x.T).topk(min(k, len(train_x)), dim=1).indices
    return train_y[nearest].nanmean(1).nan_to_num(0.0)


def with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.double)], 1)


def ridge_outcomes(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A linear probe per model: `weights` (feature_dim + 1 bias, models) fitted by router/training/train.py."""
    return (with_bias(x) @ weights.double()).float()


class OutcomeBlend(NamedTuple):
    """Beside the heads, the outcome rows' own evidence: per-model quality = the mean of the calibrated heads, the kNN
    mean outcome and a ridge probe (it routed better than each of the three: docs/benchmarks/outcome_eval.md)."""

    x: torch.Tensor  # the outcome rows' features
    y: torch.Tensor  # their scores per model, NaN where a model was not graded
    k: int
    ridge: torch.Tensor

    def apply(self, x: torch.Tensor, head_quality: torch.Tensor) -> torch.Tensor:
        return (head_quality + knn_outcomes(self.x, self.y, x, self.k) + ridge_outcomes(self.ridge, x)) / 3


def knn_probs(train_x: torch.Tensor, train_roles: torch.Tensor, test_x: torch.Tensor, k: int = KNN_K) -> torch.Tensor:
    """Vote shares of the k nearest training prompts (cosine on unit vectors, in `train_x`'s precision)."""
    out = []
    for chunk in test_x.split(1024):
        nearest = (chunk.to(train_x.dtype) @ train_x.T).topk(min(k, len(train_x)), dim=1).indices
        out.append(nn.functional.one_hot(train_roles[nearest], len(ROLES)).float().mean(1))
    return torch.cat(out) if out else torch.zeros(0, len(ROLES))


def role_probs(role_logits: torch.Tensor, x: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The scorer's role probabilities for features `x` from the heads' role logits, averaged with the kNN vote over
    `reference` (features, role indices) when there is one. LOSO evaluation calls this too, so it measures what serves."""
    probs = role_logits.softmax(-1)
    if reference is not None:
        probs = (probs + knn_probs(reference[0], reference[1], x)) / 2
    return probs


def reference_set(features: torch.Tensor, roles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kNN reference as a loaded checkpoint holds it: role-labelled rows only, features stored as float16 and
    searched in bfloat16."""
    keep = roles >= 0
    return features[keep].half().bfloat16(), roles[keep]


def reference_path(encoder: MiniLMEncoder, rows_digest: str) -> Path:
    """Where the kNN reference of these training rows, embedded by this encoder, is kept."""
    key = hashlib.sha256(f"{encoder.identity}|{rows_digest}".encode()).hexdigest()[:16]
    return default_cache_dir() / "router" / "knn" / f"reference-{key}.pt"


def save_reference(path: Path, reference: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Write a kNN reference as `reference_set` makes it (bfloat16 features), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"x": reference[0], "roles": reference[1].to(torch.int8)}, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents; ValueError if this code cannot serve it."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != CHECKPOINT_FORMAT or blob.get("roles") != list(ROLES):
        raise ValueError(f"{path}: checkpoint format/roles {blob.get('format')}/{blob.get('roles')} not supported "
                         f"(this code reads format {CHECKPOINT_FORMAT}; retrain with `python -m router train`)")
    if blob["knn"] is not None and blob["knn"]["k"] != KNN_K:
        raise ValueError(f"{path}: kNN k={blob['knn']['k']}, this code uses {KNN_K}")
    return blob


def checkpoint_encoder(blob: dict) -> MiniLMEncoder:
    """The encoder a checkpoint was trained on (its ONNX graph is built into the cache on first use)."""
    return MiniLMEncoder(**blob["encoder_args"], student=blob["student"])


class Scorer:
    """Encoder + head; `predict` returns role probabilities and per-model quality for a batch of prompts."""

    def __init__(self, encoder: MiniLMEncoder, head: HeadEnsemble, model_names: list[str], meta: dict,
                 reference: tuple[torch.Tensor, torch.Tensor] | None = None, calibration: Calibration | None = None,
                 blend: OutcomeBlend | None = None) -> None:
        self.encoder = encoder
        self.blend = blend
        self.head = head.eval()
        self.reference = reference
        self.calibration = calibration
        # The head is a tiny MLP and the only torch work left in scoring (the encoder runs in onnxruntime with its
        # own threads): with torch's 2-thread pool a single-prompt call measured ~16 ms p50 vs ~5.6 ms with one.
        torch.set_num_threads(1)
        self.model_names = model_names
        self.meta = meta  # version, train info, and `reference_rows` ({"n", "digest", ...}) when it has a reference

    @property
    def name(self) -> str:
        return f"mlp:{self.meta.get('version', '?')}"

    def predict(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predict_vectors(self.encoder.encode(texts))

    def predict_vectors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Role probabilities and quality from prompt vectors already encoded (benchmarks compare ways of encoding)."""
        with torch.inference_mode():
            role_logits, model_logits = self.head(x)
            if self.calibration is not None:
                model_logits = self.calibration.apply(model_logits)
            quality = model_logits.sigmoid()
            if self.blend is not None:
                quality = self.blend.apply(x, quality)
            return role_probs(role_logits, x, self.reference), quality

    def save(self, path: Path, train_info: dict) -> Path:
        """Write the checkpoint, and the kNN reference into the cache where `load` looks for it."""
        knn = None
        if self.reference is not None:
            rows = self.meta["reference_rows"]
            save_reference(reference_path(self.encoder, rows["digest"]), self.reference)
            knn = {"k": KNN_K, "rows": rows}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": self.meta["version"],
                "encoder": self.encoder.info,
                "encoder_args": {"max_tokens": self.encoder.max_tokens, "layers": self.encoder.layers,
                                 "quantized": self.encoder.quantized},
                "student": self.encoder.student,
                "roles": list(ROLES),
                "models": self.model_names,
                "hidden": self.head.hidden,
                "members": len(self.head.members),
                "state": {k: v.half() for k, v in self.head.state_dict().items()},
                "knn": knn,
                "calibration": self.calibration._asdict() if self.calibration is not None else None,
                "outcome_blend": {**self.blend._asdict(), "x": self.blend.x.half()} if self.blend is not None else None,
                "train": train_info,
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: Path, encoder: MiniLMEncoder | None = None) -> Scorer:
        """Load a checkpoint; ValueError if it does not fit this code or the installed encoder, or its kNN reference
        has not been built on this machine."""
        blob = read_checkpoint(path)
        encoder = encoder or checkpoint_encoder(blob)
        expected = {k: v for k, v in blob["encoder"].items() if k != "version"}
        actual = {k: v for k, v in encoder.info.items() if k != "version"}
        if expected != actual:
            raise ValueError(f"{path}: trained for encoder {expected}, installed is {actual}")
        head = HeadEnsemble([QualityHead(encoder.feature_dim, blob["hidden"], len(blob["models"]))
                             for _ in range(blob["members"])])
        head.load_state_dict({k: v.float() for k, v in blob["state"].items()})
        meta = {"version": blob["version"], "train": blob["train"]}
        reference = None
        if blob["knn"] is not None:
            meta["reference_rows"] = rows = blob["knn"]["rows"]
            where = reference_path(encoder, rows["digest"])
            if not where.exists():
                raise ValueError(f"{path}: its kNN reference ({rows['n']} training rows) is not built on this machine; "
                                 f"run `python -m router prepare --checkpoint {path}`")
            stored = torch.load(where, map_location="cpu", weights_only=True)
            reference = (stored["x"], stored["roles"].long())
        calibration = Calibration(**blob["calibration"]) if blob.get("calibration") else None
        blend = blob.get("outcome_blend")
        blend = OutcomeBlend(**{**blend, "x": blend["x"].float()}) if blend else None
        return cls(encoder, head, blob["models"], meta, reference, calibration, blend)
