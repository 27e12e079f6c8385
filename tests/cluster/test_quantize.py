"""cluster.bench.quantize's bookkeeping: folder names, the idempotence marker and its early errors (no venv, no model)."""

import json

import pytest

from cluster.bench import quantize


def prepared(tmp_path, name="coder"):
    source = tmp_path / "models" / name
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "prepared.json").write_text(json.dumps({"source": "pypi"}))
    return source


def test_quantized_dir_sits_next_to_the_source_with_the_scheme_lowercased(tmp_path):
    assert quantize.quantized_dir(tmp_path, "qwen-coder-1.5b", "W4A16") == tmp_path / "models" / "qwen-coder-1.5b-w4a16"


def test_fingerprint_changes_with_scheme_and_source_marker(tmp_path):
    source = prepared(tmp_path)
    w8 = quantize.fingerprint(source, "W8A8")
    assert w8 != quantize.fingerprint(source, "W4A16")
    (source / "prepared.json").write_text(json.dumps({"source": "other"}))
    assert w8 != quantize.fingerprint(source, "W8A8")


def test_a_current_marker_skips_the_venv_and_the_work(tmp_path, monkeypatch):
    source = prepared(tmp_path)
    out_dir = quantize.quantized_dir(tmp_path, "coder", "W8A8")
    out_dir.mkdir()
    (out_dir / quantize.MARKER).write_text(json.dumps(quantize.fingerprint(source, "W8A8")))
    monkeypatch.setattr(quantize, "venv_python", lambda cache: pytest.fail("venv touched although the checkpoint is current"))
    assert quantize.build("coder", "W8A8", tmp_path) == out_dir


def test_unprepared_model_fails_before_building_anything(tmp_path):
    with pytest.raises(SystemExit, match="cluster.prepare"):
        quantize.build("coder", "W8A8", tmp_path)
    assert not (tmp_path / "venv-quant").exists()


def test_scheme_is_case_insensitive_and_checked(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(quantize, "build", lambda model, scheme, cache: seen.append(scheme))
    quantize.main(["--scheme", "w4a16", "--cache", str(tmp_path)])
    assert seen == ["W4A16"]
    with pytest.raises(SystemExit):
        quantize.main(["--scheme", "int3", "--cache", str(tmp_path)])
