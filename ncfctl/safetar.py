"""Packing and safely unpacking ``.tar.gz`` archives that cross a trust boundary.

Archives come back from services we do not control (SageMaker Neo's compiled output, a training
job's ``model.tar.gz``): a crafted member named ``../../.bashrc``, ``/etc/passwd``, a link, or a
gzip bomb could overwrite files anywhere the user can write or fill the disk. Neither Neo nor
training outputs need links, so :func:`safe_extract` accepts regular files and folders only and
writes every byte itself: it does not rely on ``tarfile``'s ``filter="data"``, which Python
3.11.x before 3.11.13 does not fully enforce (CVE-2025-4517: a chain of long-named symlinks
defeats its path check). Extraction goes into a fresh folder next to the target that is renamed
into place only once the whole archive passed, so a refused archive writes nothing.
:func:`pack` writes deterministic archives (sorted names, zeroed owners and mtimes) so the same
files give the same bytes and the same S3 ETag.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ncfctl import fileio
from ncfctl.config import ArchiveConfig
from ncfctl.errors import NcfError

CHUNK = 1 << 20


class _Refused(Exception):
    """A member or limit that stops extraction; becomes one NcfError line naming the archive."""


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The member's path as normalized parts (``()`` for the archive root ``.``); refused if unsafe."""
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise _Refused(f"member {name!r}: absolute path")
    parts = tuple(part for part in PurePosixPath(name).parts if part != ".")
    if ".." in parts:
        raise _Refused(f"member {name!r}: path contains '..'")
    if member.issym():
        raise _Refused(f"member {name!r}: symlink to {member.linkname!r} (only files and folders are extracted)")
    if member.islnk():
        raise _Refused(f"member {name!r}: hardlink to {member.linkname!r} (only files and folders are extracted)")
    if not (member.isreg() or member.isdir()):
        raise _Refused(f"member {name!r}: special file (device, fifo)")
    if not parts and member.isreg():
        raise _Refused(f"member {name!r}: a file without a name")
    return parts


def _extract_into(archive: Path, root: Path, limits: ArchiveConfig) -> list[str]:
    """Write every member of ``archive`` under the empty folder ``root``, counting what is written."""
    files: list[str] = []
    written = 0
    with tarfile.open(archive, "r|*") as tar:  # one sequential pass: nothing is decompressed twice
        for count, member in enumerate(tar, start=1):
            if count > limits.max_members:
                raise _Refused(f"it holds more than {limits.max_members} members (archive.max_members)")
            parts = _member_parts(member)
            destination = root.joinpath(*parts)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            with open(destination, "wb") as out:
                while chunk := source.read(CHUNK):
                    written += len(chunk)
                    if written > limits.max_bytes:
                        raise _Refused(f"it unpacks to more than {limits.max_bytes} bytes (archive.max_bytes)")
                    out.write(chunk)
            destination.chmod((member.mode & 0o755) | 0o600)  # no set-id bits, no group/other write
            files.append("/".join(parts))
    return files


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike, limits: ArchiveConfig) -> list[str]:
    """Extract ``archive`` into ``target`` (absent or empty) all or nothing; returns the files written.

    Refuses (NcfError, ``target`` untouched) absolute paths, ``..`` components, symlinks,
    hardlinks, devices and fifos, more than ``limits.max_members`` members and more than
    ``limits.max_bytes`` unpacked bytes, and any archive that is not a readable tar.
    """
    archive, target = Path(archive), Path(target).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise NcfError(f"cannot extract {archive} into {target}: it already exists and is not an empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.extracting-", dir=target.parent))
    try:
        files = _extract_into(archive, staging, limits)
        staging.chmod(0o755)  # mkdtemp's folder is owner-only
        os.replace(staging, target)  # an empty existing target is replaced too (rename(2))
    except _Refused as exc:
        raise NcfError(f"refusing to extract {archive}: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise NcfError(f"{archive} is not a readable tar archive: {exc}".splitlines()[0]) from None
    except OSError as exc:
        raise NcfError(f"cannot extract {archive} into {target}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
