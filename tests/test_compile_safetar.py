"""ncfctl.safetar: deterministic packing, and extraction that refuses members escaping the target."""

from __future__ import annotations

import io
import tarfile

import pytest

from ncfctl import safetar
from ncfctl.errors import NcfError


def _tar(path, members):
    """Write a tar.gz by hand: ``members`` are TarInfo objects (with data for regular files)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_pack_round_trip_is_deterministic(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.onnx").write_bytes(b"onnx-bytes")
    (tmp_path / "src" / "notes.txt").write_text("hello")
    files = [(tmp_path / "src" / "notes.txt", "notes.txt"), (tmp_path / "src" / "model.onnx", "model.onnx")]
    first = safetar.pack(tmp_path / "a.tar.gz", files).read_bytes()
    second = safetar.pack(tmp_path / "b.tar.gz", list(reversed(files))).read_bytes()
    assert first == second  # same files, same bytes (sorted names, zeroed mtimes/owners)
    written = safetar.safe_extract(tmp_path / "a.tar.gz", tmp_path / "out")
    assert sorted(written) == ["model.onnx", "notes.txt"]
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"onnx-bytes"
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert {m.uid for m in tar} == {0} and {m.mtime for m in tar} == {0}


def test_pack_rejects_escaping_names(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NcfError, match="relative path"):
        safetar.pack(tmp_path / "a.tar.gz", [(tmp_path / "f", "../f")])
    assert not (tmp_path / "a.tar.gz").exists()


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_file("/etc/evil"), "absolute path"),
        (_file("../evil"), "'..'"),
        (_file("sub/../../evil"), "'..'"),
        (_link("escape", "../../outside"), "escapes the folder"),
        (_link("abs", "/etc/passwd"), "absolute path"),
        (_link("hard", "../outside", tarfile.LNKTYPE), "escapes the folder"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-out", "symlink-absolute", "hardlink-out"],
)
def test_safe_extract_refuses_and_writes_nothing(tmp_path, member, reason):
    archive = _tar(tmp_path / "bad.tar.gz", [_file("compiled.so", b"lib"), member])
    target = tmp_path / "target"
    with pytest.raises(NcfError, match=reason) as err:
        safetar.safe_extract(archive, target)
    assert "refusing to extract" in str(err.value)
    assert list(target.iterdir()) == []  # vetted before anything was written
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_safe_extract_refuses_device_files(tmp_path):
    info = tarfile.TarInfo("dev")
    info.type = tarfile.CHRTYPE
    archive = _tar(tmp_path / "dev.tar.gz", [(info, None)])
    with pytest.raises(NcfError, match="special file"):
        safetar.safe_extract(archive, tmp_path / "target")


def test_safe_extract_allows_links_inside_the_folder(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [_file("lib/libdlr.so", b"lib"), _link("libdlr.so", "lib/libdlr.so")])
    written = safetar.safe_extract(archive, tmp_path / "target")
    assert written == ["lib/libdlr.so"]
    assert (tmp_path / "target" / "libdlr.so").read_bytes() == b"lib"


def test_safe_extract_rejects_a_non_archive(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(NcfError, match="not a readable tar archive"):
        safetar.safe_extract(tmp_path / "junk.tar.gz", tmp_path / "target")
