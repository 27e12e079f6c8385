"""Quantize a prepared specialist into a compressed-tensors checkpoint vLLM-CPU can serve (W8A8 or W4A16).

Data-free: llmcompressor's `QuantizationModifier` on every Linear but `lm_head`, no calibration set.
llmcompressor pins its own transformers and deps, so it lives in a venv of its own (`.cache/venv-quant`),
built on first use; the quantization runs in a subprocess of that venv. A marker makes reruns a no-op.

    python -m cluster.bench.quantize --model qwen-coder-1.5b --scheme W8A8
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

SCHEMES = ("W8A8", "W4A16")
LLMCOMPRESSOR = "llmcompressor==0.14.0.1"
# `torch==2.13.0` resolves to the local +cpu wheel, so pip does not fetch a multi-GB CUDA build.
REQUIREMENTS = (LLMCOMPRESSOR, "torch==2.13.0")
MARKER = "quantized.json"
VENV_MARKER = "requirements.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


def quantized_dir(cache: Path, model: str, scheme: str) -> Path:
    """Where the checkpoint goes: `models/<model>-<scheme>`, next to the bf16 folder it came from."""
    return cache / "models" / f"{model}-{scheme.lower()}"


def fingerprint(source: Path, scheme: str) -> dict:
    """What a quantized folder was built from; a different source, scheme or pin triggers a rebuild."""
    prepared = source / "prepared.json"
    return {
        "source": str(source),
        "source_marker": json.loads(prepared.read_text()) if prepared.exists() else None,
        "scheme": scheme,
        "requirements": list(REQUIREMENTS),
    }


def is_current(marker: Path, expected: dict) -> bool:
    return marker.exists() and json.loads(marker.read_text()) == expected


def venv_python(cache: Path) -> Path:
    """llmcompressor's venv, created (python3.11, pinned requirements) unless it already has them."""
    venv = cache / "venv-quant"
    python = venv / "bin" / "python"
    if is_current(venv / VENV_MARKER, list(REQUIREMENTS)):
        return python
    if not shutil.which("python3.11"):
        raise SystemExit("cluster.bench.quantize: python3.11 is needed to build the llmcompressor venv and was not found on PATH")
    print(f"building {venv} with {' '.join(REQUIREMENTS)} …", flush=True)
    start = time.perf_counter()
    subprocess.run(["python3.11", "-m", "venv", "--clear", str(venv)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS])
    if pip.returncode != 0:
        raise SystemExit(f"cluster.bench.quantize: `pip install {' '.join(REQUIREMENTS)}` failed in {venv} (see pip's output above)")
    (venv / VENV_MARKER).write_text(json.dumps(list(REQUIREMENTS)))
    print(f"venv ready in {time.perf_counter() - start:.0f} s", flush=True)
    return python


def quantize(source: Path, out_dir: Path, scheme: str) -> None:
    """Runs inside the llmcompressor venv: load bf16, apply the scheme to every Linear but lm_head, save compressed."""
    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(source)
    oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"]))
    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)


def build(model: str, scheme: str, cache: Path) -> Path:
    """Quantize `cache/models/<model>` once, via a temporary folder so a crash leaves no half-written checkpoint."""
    source = cache / "models" / model
    if not (source / "config.json").exists():
        raise SystemExit(f"cluster.bench.quantize: no prepared weights in {source}; run `python -m cluster.prepare --profile local`")
    out_dir = quantized_dir(cache, model, scheme)
    expected = fingerprint(source, scheme)
    if is_current(out_dir / MARKER, expected):
        print(f"{out_dir.name}: ready in {out_dir}")
        return out_dir
    python = venv_python(cache)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"{out_dir.name}: quantizing {source} ({scheme}) …", flush=True)
    start = time.perf_counter()
    cmd = [str(python), "-m", "cluster.bench.quantize", "--worker", str(source), str(partial), scheme]
    if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
        raise SystemExit(f"cluster.bench.quantize: quantizing {model} to {scheme} failed (llmcompressor's traceback above)")
    (partial / MARKER).write_text(json.dumps(expected))
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    print(f"{out_dir.name}: written in {time.perf_counter() - start:.0f} s to {out_dir}")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.bench.quantize", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen-coder-1.5b", help="a prepared specialist under <cache>/models")
    parser.add_argument("--scheme", choices=SCHEMES, type=str.upper, default="W8A8")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: $SPECIALISTS_CACHE or .cache/)")
    parser.add_argument("--worker", nargs=3, metavar=("SOURCE", "OUT", "SCHEME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        source, out_dir, scheme = args.worker
        quantize(Path(source), Path(out_dir), scheme)
        return
    from router.catalog import default_cache_dir

    build(args.model, args.scheme, (args.cache or default_cache_dir()).resolve())


if __name__ == "__main__":
    main()
