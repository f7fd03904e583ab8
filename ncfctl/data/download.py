"""Fetch a MovieLens release from GroupLens, verified, into the workspace's ``downloads/`` folder.

Size and MD5 are pinned per release (GroupLens publishes ``<name>.zip.md5`` beside each archive;
ml-latest-small is re-released from time to time, its pin is the 2018-09 archive still served):
a truncated or altered download fails loudly instead of silently changing the data. The file is
streamed to a temporary name and renamed only once verified, so a cached archive is always whole.
Without network the error says how to pass a local copy as ``data.source``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import httpx

from ncfctl import fileio
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress

BASE_URL = "https://files.grouplens.org/datasets/movielens"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Release:
    url: str
    size: int  # bytes
    md5: str


RELEASES: dict[str, Release] = {
    "ml-100k": Release(f"{BASE_URL}/ml-100k.zip", 4_924_029, "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": Release(f"{BASE_URL}/ml-1m.zip", 5_917_549, "c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": Release(f"{BASE_URL}/ml-20m.zip", 198_702_078, "cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": Release(f"{BASE_URL}/ml-25m.zip", 261_978_986, "6b51fb2759a8657d3bfcbfc42b592ada"),
    "ml-latest-small": Release(f"{BASE_URL}/ml-latest-small.zip", 978_202, "31a303aabbc519bd33d025e44d6c2570"),
}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, release: Release) -> str | None:
    """Why ``path`` is not the release (``None`` when it is)."""
    size = path.stat().st_size
    if size != release.size:
        return f"size {size:,} bytes, expected {release.size:,}"
    digest = _md5(path)
    if digest != release.md5:
        return f"MD5 {digest}, expected {release.md5}"
    return None


def fetch_release(dataset: str, cache_dir: Path, progress: Progress = NO_PROGRESS, timeout: float = 30.0) -> Path:
    """``cache_dir/<dataset>.zip``, downloaded and verified unless a verified copy is already there."""
    release = RELEASES[dataset]
    target = cache_dir / f"{dataset}.zip"
    if target.is_file() and _verify(target, release) is None:
        return target
    offline_hint = f"download {release.url} elsewhere and set data.source to /path/to/{dataset}.zip (or its folder)"
    offline = {"hint": offline_hint, "settings": ("data.source",)}
    task = progress.task(f"download {dataset}.zip", total=release.size)
    try:
        with fileio.atomic_path(target) as tmp:
            with httpx.stream("GET", release.url, timeout=timeout, follow_redirects=True) as response:
                response.raise_for_status()
                with open(tmp, "wb") as fh:
                    for block in response.iter_bytes(CHUNK_BYTES):
                        fh.write(block)
                        task.advance(len(block))
            problem = _verify(tmp, release)
            if problem:
                raise NcfError(f"download of {release.url} is corrupt: {problem}", **offline)
    except httpx.HTTPStatusError as exc:
        raise NcfError(f"cannot download {release.url}: HTTP {exc.response.status_code}", **offline) from None
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NcfError(f"cannot download {release.url} (no network?): {reason}", **offline) from None
    return target
