"""Manage the router's API keys (docs/security.md): `create` prints a new key once, `list` shows ids, `revoke ID`.

    python -m cluster.keys create --tenant billing [--admin] [--rpm 60 --tpm 100000 --concurrent 4]
    python -m cluster.keys list
    python -m cluster.keys revoke 3f9c0a1b2d4e

The store holds only SHA-256 digests; a lost key cannot be shown again: revoke it and create another.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from serve.auth import ApiKey, create_key, default_store, read_keys, revoke_key


def _row(key: ApiKey) -> str:
    quotas = " ".join(f"{name}={value}" for name in ("rpm", "tpm", "concurrent") if (value := getattr(key, name)) is not None)
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(key.created))
    return f"{key.id}  {key.tenant:<20} {key.role:<6} {created}Z  {'revoked' if key.revoked else 'active ':<7}  {quotas or '-'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=default_store(), help="the key store file (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="a new key; its value is printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--admin", action="store_true", help="may read the decision log (GET /v1/router/decisions/{id})")
    for quota in ("rpm", "tpm", "concurrent"):
        create.add_argument(f"--{quota}", type=int, help=f"this key's {quota} quota (default: the profile's security.{quota})")
    commands.add_parser("list", help="every key: id, tenant, role, created, state, quota overrides (never the key)")
    commands.add_parser("revoke", help="refuse a key from now on").add_argument("id")
    ns = parser.parse_args(argv)
    if ns.command == "create":
        raw, key = create_key(ns.store, ns.tenant, "admin" if ns.admin else "tenant", rpm=ns.rpm, tpm=ns.tpm,
                              concurrent=ns.concurrent)
        print(f"created key {key.id} for {key.tenant} ({key.role}); it is shown only now:\n{raw}")
    elif ns.command == "list":
        for key in read_keys(ns.store):
            print(_row(key))
    else:
        try:
            key = revoke_key(ns.store, ns.id)
        except KeyError:
            sys.exit(f"error: no key with id {ns.id!r} in {ns.store} (python -m cluster.keys list)")
        print(f"revoked {key.id} ({key.tenant})")


if __name__ == "__main__":
    main()
