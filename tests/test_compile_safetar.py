"""ncfctl.safetar: deterministic packing, and all-or-nothing extraction of files and folders only.

Every refused archive must leave the target's parent exactly as it was: no target folder, no
member, no temporary folder.
"""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ncfctl import safetar
from ncfctl.config import ArchiveConfig
from ncfctl.errors import NcfError

LIMITS = ArchiveConfig(max_bytes=1 << 20, max_members=50)


def _tar(path, members, mode="w:gz"):
    """Write a tar by hand: ``members`` are (TarInfo, data or None) pairs."""
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _folder(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def place(tmp_path):
    """(archives folder, parent folder of the target): archives live apart from where they unpack."""
    archives, parent = tmp_path / "archives", tmp_path / "unpack"
    archives.mkdir()
    parent.mkdir()
    (parent / "victim.txt").write_text("original")  # what an escaping member would overwrite
    return archives, parent


def refuses(archive, parent, match, limits=LIMITS):
    """Extraction into ``parent/target`` is refused with ``match`` and leaves ``parent`` as it was."""
    before = _listing(parent)
    with pytest.raises(NcfError, match=match) as err:
        safetar.safe_extract(archive, parent / "target", limits)
    assert len(str(err.value).splitlines()) == 1 and str(archive) in str(err.value)
    assert _listing(parent) == before and (parent / "victim.txt").read_text() == "original"
    return err.value


def test_pack_round_trip_is_deterministic(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.onnx").write_bytes(b"onnx-bytes")
    (tmp_path / "src" / "notes.txt").write_text("hello")
    files = [(tmp_path / "src" / "notes.txt", "notes.txt"), (tmp_path / "src" / "model.onnx", "model.onnx")]
    first = safetar.pack(tmp_path / "a.tar.gz", files).read_bytes()
    second = safetar.pack(tmp_path / "b.tar.gz", list(reversed(files))).read_bytes()
    assert first == second  # same files, same bytes (sorted names, zeroed mtimes/owners)
    written = safetar.safe_extract(tmp_path / "a.tar.gz", tmp_path / "out", LIMITS)
    assert sorted(written) == ["model.onnx", "notes.txt"]
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"onnx-bytes"
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert {m.uid for m in tar} == {0} and {m.mtime for m in tar} == {0}


def test_pack_rejects_escaping_names(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NcfError, match="relative path"):
        safetar.pack(tmp_path / "a.tar.gz", [(tmp_path / "f", "../f")])
    assert not (tmp_path / "a.tar.gz").exists()


def test_files_and_folders_extract_without_set_id_bits(place):
    archives, parent = place
    setuid, _ = script = _file("./bin/run.sh", b"#!/bin/sh\n")
    setuid.mode = 0o4777
    members = [_folder("."), _folder("bin"), script, _file("lib/deep/compiled.so", b"\x7fELF")]
    written = safetar.safe_extract(_tar(archives / "ok.tar.gz", members), parent / "target", LIMITS)
    assert written == ["bin/run.sh", "lib/deep/compiled.so"]
    assert (parent / "target" / "lib" / "deep" / "compiled.so").read_bytes() == b"\x7fELF"
    assert os.stat(parent / "target" / "bin" / "run.sh").st_mode & 0o7777 == 0o755
    assert sorted(os.listdir(parent)) == ["target", "victim.txt"]  # no temporary folder left


def cve_2025_4517_members(levels: int = 16, long_name: int = 247):
    """The public CVE-2025-4517 pattern: symlinks through long-named folders, then a hardlink through them.

    ``a -> ddd..d``, ``ddd..d/b -> ddd..d``, ...: ``a/b/.../p`` is a short name for a path close to
    PATH_MAX. A symlink ``a/.../p/lll..l -> ../../..`` (back to the root) is too long for
    ``os.path.realpath`` to resolve, so the check treats it as a folder; ``escape -> a/.../p/lll..l/..``
    then looks inside but is the target's parent, and the hardlink ``victim_link -> escape/victim.txt``
    plus a regular file of the same name writes through it.
    """
    folder, members, prefix = "d" * long_name, [], ""
    hops = [chr(ord("a") + i) for i in range(levels)]
    for hop in hops:
        members += [_folder(prefix + folder), _link(prefix + hop, folder)]
        prefix += folder + "/"
    deep = "/".join(hops) + "/" + "l" * 254
    members += [
        _link(deep, "/".join([".."] * levels)),
        _link("escape", deep + "/.."),
        _link("victim_link", "escape/victim.txt", tarfile.LNKTYPE),
        _file("victim_link", b"overwritten"),
    ]
    return members


def test_cve_2025_4517_symlink_chain_and_hardlink_are_refused(place):
    archives, parent = place
    archive = _tar(archives / "cve.tar", cve_2025_4517_members(), mode="w")
    refuses(archive, parent, r"member 'a': symlink to 'd{247}'")


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_file("/etc/evil"), "absolute path"),
        (_file("../victim.txt"), "'..'"),
        (_file("sub/../../victim.txt"), "'..'"),
        (_folder("../outside"), "'..'"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "folder-dotdot"],
)
def test_path_traversal_is_refused(place, member, reason):
    archives, parent = place
    refuses(_tar(archives / "bad.tar.gz", [_file("compiled.so", b"lib"), member]), parent, reason)


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_link("libdlr.so", "compiled.so"), "member 'libdlr.so': symlink to 'compiled.so'"),
        (_link("out", "../victim.txt"), "member 'out': symlink"),
        (_link("hard", "compiled.so", tarfile.LNKTYPE), "member 'hard': hardlink to 'compiled.so'"),
        (_link("hard", "../victim.txt", tarfile.LNKTYPE), "member 'hard': hardlink"),
        (_special("tty", tarfile.CHRTYPE), "member 'tty': special file"),
        (_special("disk", tarfile.BLKTYPE), "member 'disk': special file"),
        (_special("pipe", tarfile.FIFOTYPE), "member 'pipe': special file"),
    ],
    ids=["symlink-inside", "symlink-out", "hardlink-inside", "hardlink-out", "chardev", "blockdev", "fifo"],
)
def test_links_and_special_files_are_refused(place, member, reason):
    archives, parent = place
    refuses(_tar(archives / "bad.tar.gz", [_file("compiled.so", b"lib"), member]), parent, reason)


def test_gzip_bomb_stops_at_the_byte_cap(place):
    archives, parent = place
    archive = _tar(archives / "bomb.tar.gz", [_file("a.bin", bytes(600_000)), _file("b.bin", bytes(8 << 20))])
    assert archive.stat().st_size < 20_000  # 8.6 MB of zeros in a few KB
    error = refuses(archive, parent, "unpacks to more than 1048576 bytes")
    assert "archive.max_bytes" in str(error)


def test_too_many_members_are_refused(place):
    archives, parent = place
    archive = _tar(archives / "many.tar.gz", [_file(f"f{i}") for i in range(6)])
    limits = ArchiveConfig(max_bytes=1 << 20, max_members=5)
    error = refuses(archive, parent, "holds more than 5 members", limits)
    assert "archive.max_members" in str(error)
    assert len(safetar.safe_extract(archive, parent / "target", ArchiveConfig(max_bytes=100, max_members=6))) == 6


def test_a_refused_archive_leaves_nothing_behind(place):
    """A truncated archive fails after its first members were read: none of them may remain."""
    archives, parent = place
    whole = _tar(archives / "whole.tar", [_file("first.bin", b"1" * 4096), _file("second.bin", b"2" * 65536)], "w")
    truncated = archives / "truncated.tar"
    truncated.write_bytes(whole.read_bytes()[:20_000])
    refuses(truncated, parent, "is not a readable tar archive")
    (parent / "target").mkdir()  # an existing empty target stays empty
    refuses(truncated, parent, "is not a readable tar archive")
    assert list((parent / "target").iterdir()) == []


def test_an_existing_non_empty_target_is_refused(place):
    archives, parent = place
    (parent / "target").mkdir()
    (parent / "target" / "keep.txt").write_text("mine")
    archive = _tar(archives / "ok.tar.gz", [_file("keep.txt", b"theirs")])
    refuses(archive, parent, "already exists and is not an empty folder")
    assert (parent / "target" / "keep.txt").read_text() == "mine"


def test_safe_extract_rejects_a_non_archive(place):
    archives, parent = place
    (archives / "junk.tar.gz").write_bytes(b"not a tarball")
    refuses(archives / "junk.tar.gz", parent, "not a readable tar archive")
