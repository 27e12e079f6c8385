"""The key store and its CLI: keys are shown once, stored only as digests, listed by id, revoked by id."""

import hmac
import json
import stat
from pathlib import Path

import pytest

from cluster import keys as cli
from serve import auth


def create(store: Path, capsys, *args: str) -> tuple[str, str]:
    """(raw key, id) as `create` printed them."""
    cli.main(["--store", str(store), "create", *args])
    lines = capsys.readouterr().out.splitlines()
    return lines[-1], lines[0].split()[2]


def test_create_prints_the_key_once_and_stores_only_its_digest(tmp_path: Path, capsys):
    store = tmp_path / "keys.json"
    raw, key_id = create(store, capsys, "--tenant", "billing", "--rpm", "60")
    assert raw.startswith("sr-") and auth.KEY_PATTERN.match(raw)
    text = store.read_text()
    assert raw not in text and raw[3:] not in text
    [entry] = json.loads(text)["keys"]
    assert entry == {**entry, "id": key_id, "tenant": "billing", "role": "tenant", "sha256": auth.digest(raw), "revoked": False,
                     "rpm": 60, "tpm": None, "concurrent": None}
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".keys.json.*.tmp"))  # written through a temporary file, replaced atomically


def test_keys_are_256_bit_and_distinct(tmp_path: Path, capsys):
    raws = {create(tmp_path / "keys.json", capsys, "--tenant", f"t{i}")[0] for i in range(3)}
    assert len(raws) == 3
    assert all(len(r) == len("sr-") + 43 for r in raws)  # token_urlsafe(32): 32 random bytes


def test_list_shows_ids_never_keys_or_digests(tmp_path: Path, capsys):
    store = tmp_path / "keys.json"
    raw, key_id = create(store, capsys, "--tenant", "ops", "--admin", "--concurrent", "2")
    cli.main(["--store", str(store), "list"])
    out = capsys.readouterr().out
    assert key_id in out and "ops" in out and "admin" in out and "concurrent=2" in out
    assert raw not in out and auth.digest(raw) not in out and auth.digest(raw)[:16] not in out


def test_revoke_marks_the_key_and_the_store_sees_it(tmp_path: Path, capsys):
    store_path = tmp_path / "keys.json"
    raw, key_id = create(store_path, capsys, "--tenant", "billing")
    other, _ = create(store_path, capsys, "--tenant", "search")
    store = auth.KeyStore(store_path)
    assert store.find(raw).revoked is False
    cli.main(["--store", str(store_path), "revoke", key_id])
    assert "revoked" in capsys.readouterr().out
    assert store.find(raw).revoked is True  # re-read because the file changed
    assert store.find(other).revoked is False


def test_revoking_an_unknown_id_fails(tmp_path: Path, capsys):
    create(tmp_path / "keys.json", capsys, "--tenant", "billing")
    with pytest.raises(SystemExit, match="no key with id"):
        cli.main(["--store", str(tmp_path / "keys.json"), "revoke", "nope"])


def test_lookup_compares_digests_in_constant_time(tmp_path: Path, capsys, monkeypatch):
    raw, _ = create(tmp_path / "keys.json", capsys, "--tenant", "a")
    create(tmp_path / "keys.json", capsys, "--tenant", "b")
    compared, real = [], hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda x, y: compared.append((x, y)) or real(x, y))
    assert auth.KeyStore(tmp_path / "keys.json").find(raw).tenant == "a"
    assert len(compared) == 2  # every stored digest, even after the match: no early exit
    assert auth.KeyStore(tmp_path / "keys.json").find("sr-" + "x" * 43) is None


def test_a_broken_store_keeps_the_keys_read_before(tmp_path: Path, capsys):
    store_path = tmp_path / "keys.json"
    raw, _ = create(store_path, capsys, "--tenant", "a")
    store = auth.KeyStore(store_path)
    assert store.find(raw) is not None
    store_path.write_text("{not json")
    assert store.find(raw) is not None
