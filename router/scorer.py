"""The trained scorer: MiniLM features -> a small MLP with a role head (the prior) and per-model outcome heads.

A checkpoint is one small torch file holding the head's weights (float16), the encoder it expects (the encoder
itself comes from the installed package, it is not in the checkpoint), and how it was trained; `Scorer.load`
refuses a mismatched one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from router.catalog import ROLES
from router.encoder import MiniLMEncoder

CHECKPOINT_FORMAT = 2  # 2: full-model MiniLM sentence embeddings (1 was pooled token embeddings + IDF)
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


class Scorer:
    """Encoder + head; `predict` returns role probabilities and per-model quality for a batch of prompts."""

    def __init__(self, encoder: MiniLMEncoder, head: QualityHead, model_names: list[str], meta: dict) -> None:
        self.encoder = encoder
        self.head = head.eval()
        # The head is a tiny MLP and the only torch work left in scoring (the encoder runs in onnxruntime with its
        # own threads): with torch's 2-thread pool a single-prompt call measured ~16 ms p50 vs ~5.6 ms with one.
        torch.set_num_threads(1)
        self.model_names = model_names
        self.meta = meta

    @property
    def name(self) -> str:
        return f"mlp:{self.meta.get('version', '?')}"

    def predict(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            role_logits, model_logits = self.head(self.encoder.encode(texts))
            return role_logits.softmax(-1), model_logits.sigmoid()

    def save(self, path: Path, train_info: dict) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": self.meta["version"],
                "encoder": self.encoder.info,
                "roles": list(ROLES),
                "models": self.model_names,
                "hidden": self.head.roles.in_features,
                "state": {k: v.half() for k, v in self.head.state_dict().items()},
                "train": train_info,
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: Path, encoder: MiniLMEncoder | None = None) -> Scorer:
        """Load a checkpoint; ValueError if it does not fit this code or the installed encoder."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != CHECKPOINT_FORMAT or blob.get("roles") != list(ROLES):
            raise ValueError(f"{path}: checkpoint format/roles {blob.get('format')}/{blob.get('roles')} not supported")
        encoder = encoder or MiniLMEncoder()
        expected = {k: v for k, v in blob["encoder"].items() if k != "version"}
        actual = {k: v for k, v in encoder.info.items() if k != "version"}
        if expected != actual:
            raise ValueError(f"{path}: trained for encoder {expected}, installed is {actual}")
        head = QualityHead(encoder.feature_dim, blob["hidden"], len(blob["models"]))
        head.load_state_dict({k: v.float() for k, v in blob["state"].items()})
        return cls(encoder, head, blob["models"], {"version": blob["version"], "train": blob["train"]})
