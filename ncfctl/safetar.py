"""Packing and safely unpacking ``.tar.gz`` archives that cross a trust boundary.

Archives come back from services we do not control (SageMaker Neo's compiled output, a model
someone uploaded): a crafted member named ``../../.bashrc``, ``/etc/passwd`` or a symlink pointing
outside the target could overwrite files anywhere the user can write. :func:`safe_extract` checks
every member *before* writing anything, so a refused archive leaves the target untouched, and
then extracts with Python's ``"data"`` filter as a second line of defence (it also drops
set-uid bits and device files). :func:`pack` writes deterministic archives (sorted names, zeroed
owners and mtimes) so the same files give the same bytes and the same S3 ETag.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ncfctl import fileio
from ncfctl.errors import NcfError


def _unsafe_reason(member: tarfile.TarInfo, root: Path) -> str | None:
    """Why ``member`` must not be extracted under ``root`` (None when it is safe)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith("\\"):
        return "absolute path"
    if ".." in name.parts:
        return "path contains '..'"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "special file (device, fifo)"
    destination = (root / member.name).resolve()
    if not destination.is_relative_to(root):
        return "path escapes the folder"
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute():
            return f"link to absolute path {member.linkname!r}"
        base = destination.parent if member.issym() else root
        if not (base / member.linkname).resolve().is_relative_to(root):
            return f"link {member.linkname!r} escapes the folder"
    return None


def check_members(archive: str | os.PathLike, root: str | os.PathLike) -> list[str]:
    """Names of the regular files ``archive`` would create; NcfError on the first unsafe member."""
    archive, root = Path(archive), Path(root).resolve()
    files = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                reason = _unsafe_reason(member, root)
                if reason is not None:
                    raise NcfError(f"refusing to extract {archive}: member {member.name!r}: {reason}")
                if member.isfile():
                    files.append(member.name)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise NcfError(f"{archive} is not a readable tar archive: {exc}") from None
    return files


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Extract ``archive`` into ``target`` after vetting every member; returns the files written.

    Refuses (NcfError, nothing written) absolute paths, ``..`` components, links whose target
    leaves ``target``, and device/fifo members.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    files = check_members(archive, target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise NcfError(f"cannot extract {archive} into {target}: {exc}") from None
    return files


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def pack(archive: str | os.PathLike, files: Iterable[tuple[str | os.PathLike, str]]) -> Path:
    """Write ``archive`` (gzip tar) holding each ``(source path, name in archive)``, atomically.

    Names must be relative and must not contain ``..`` (the same rule :func:`safe_extract` applies).
    """
    archive = Path(archive)
    entries = sorted(((Path(src), arcname) for src, arcname in files), key=lambda pair: pair[1])
    for _, arcname in entries:
        parts = PurePosixPath(arcname).parts
        if PurePosixPath(arcname).is_absolute() or ".." in parts or not parts:
            raise NcfError(f"archive member name {arcname!r} must be a relative path without '..'")
    with (
        fileio.atomic_path(archive) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,  # no name or time in the header
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for src, arcname in entries:
            tar.add(src, arcname=arcname, filter=_reset)
    return archive
