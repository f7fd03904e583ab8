"""sha256 of files and the check of a folder against recorded sums.

One implementation for both sides of the trust boundary: ncfctl's artifact manifests
(``ncfctl.workspace``) and the serving bundle's ``serving.json`` ``files``, which the container
checks without ncfctl. Standard library only. Hashing streams the file through
:func:`hashlib.file_digest` (fixed-size reads, the GIL released while hashing), so memory stays
flat whatever the file size; the cost is measured in README ("What ncfctl guarantees").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path


class ChecksumError(Exception):
    """A recorded file is missing, or its bytes no longer match the recorded sha256."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def hash_folder(root: str | os.PathLike, exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every regular file under ``root`` (links skipped) but ``exclude``."""
    root = Path(root)
    skip = set(exclude)
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.relative_to(root).as_posix() not in skip
    }


def verify_files(root: str | os.PathLike, expected: Mapping[str, str], names: Iterable[str] | None = None) -> None:
    """Check ``names`` (default: every recorded file) under ``root`` against ``expected``.

    Raises :class:`ChecksumError` on the first file that is not recorded, missing, not a regular
    file, or whose sha256 differs.
    """
    root = Path(root)
    for name in expected if names is None else names:
        if name not in expected:
            raise ChecksumError(name, "has no recorded sha256")
        path = root / name
        if path.is_symlink() or not path.is_file():
            raise ChecksumError(name, "is missing (a recorded file)")
        actual = sha256_file(path)
        if actual != expected[name]:
            raise ChecksumError(
                name, f"sha256 is {actual[:12]}..., the recorded one is {expected[name][:12]}...: the file changed"
            )
