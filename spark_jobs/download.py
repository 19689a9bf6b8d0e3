"""Download an official MovieLens archive, check its MD5 checksum and unpack it.

    python -m spark_jobs.download ml-1m --dest data/

MovieLens's license forbids redistribution, so the project never ships the data: this fetches it
from GroupLens on a machine with internet access. The archive is checked before anything is
unpacked, and unpacked into a temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from contracts.errors import InputDataError

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str  # as published by GroupLens beside each archive (<name>.zip.md5)
    folder: str  # the top-level folder inside the zip


ARCHIVES: dict[str, Archive] = {
    "ml-100k": Archive(f"{GROUPLENS}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k"),
    "ml-1m": Archive(f"{GROUPLENS}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m"),
    "ml-10m": Archive(f"{GROUPLENS}/ml-10m.zip", "ce571fd55effeba0271552578f2648bd", "ml-10M100K"),
    "ml-20m": Archive(f"{GROUPLENS}/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3", "ml-20m"),
    "ml-25m": Archive(f"{GROUPLENS}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", "ml-25m"),
}


class ChecksumError(InputDataError):
    pass


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name) as progress:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                progress.update(len(block))


def _safe_extract(archive: zipfile.ZipFile, into: Path) -> None:
    root = into.resolve()
    for member in archive.namelist():
        if not (root / member).resolve().is_relative_to(root):
            raise ValueError(f"archive member {member!r} would be written outside {into}")
    archive.extractall(into)


def fetch(archive: Archive, dest: Path) -> Path:
    """Download, verify, unpack; returns the dataset folder. An existing folder is kept as is."""
    final = dest / archive.folder
    if final.exists():
        log.info("%s already exists; nothing downloaded", final)
        return final
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as scratch:
        zip_path = Path(scratch) / "archive.zip"
        _download(archive.url, zip_path)
        actual = md5_of(zip_path)
        if actual != archive.md5:
            raise ChecksumError(f"{archive.url}: MD5 {actual} does not match the published {archive.md5}")
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(zip_path) as handle:
            _safe_extract(handle, unpacked)
        if not (unpacked / archive.folder).is_dir():
            raise ValueError(f"{archive.url}: no folder {archive.folder!r} inside the archive")
        shutil.move(str(unpacked / archive.folder), final)
    log.info("downloaded %s (MD5 ok) -> %s", archive.url, final)
    return final


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(ARCHIVES))
    parser.add_argument("--dest", type=Path, default=Path("data"), help="folder to unpack into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = fetch(ARCHIVES[args.dataset], args.dest)
    print(f"MOVIELENS_DIR={folder}")


if __name__ == "__main__":
    main()
