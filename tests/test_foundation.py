"""Config layering, workspace atomicity and the CLI's error contract."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.workspace import Workspace


def test_config_precedence(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  epochs: 3\n  lr: 0.5\nseed: 7\n")
    env = {"NCFCTL_TRAIN__EPOCHS": "5", "NCFCTL_SEED": "8"}
    cfg = load_config(cfg_file, {"train.epochs": 9, "seed": None}, environ=env)
    assert cfg.train.epochs == 9  # flag beats env
    assert cfg.seed == 8  # env beats file
    assert cfg.train.lr == 0.5  # file beats defaults
    assert cfg.train.negatives == 4  # defaults


def test_config_bad_value_names_key(tmp_path):
    with pytest.raises(NcfError, match=r"train\.epochs"):
        load_config(overrides={"train.epochs": "many"}, environ={})
    with pytest.raises(NcfError, match=r"train\.epohcs"):
        load_config(overrides={"train.epohcs": 3}, environ={})


def test_workspace_commit_and_latest(tmp_path):
    ws = Workspace(tmp_path)
    with ws.create("dataset", config={"a": 1}, info={"dataset": "x"}) as w:
        (w.path / "f.txt").write_text("hello")
        w.manifest.metrics["n"] = 3
    art = ws.latest("dataset")
    assert art is not None and art.id == w.id
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["files"]["f.txt"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert ws.get(art.id).path == art.path == tmp_path / "data" / art.id


def test_workspace_failure_leaves_nothing(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(RuntimeError), ws.create("model") as w:
        (w.path / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert ws.latest("model") is None
    assert not any((tmp_path / ".staging").iterdir())


def test_an_id_drawn_twice_in_one_second_is_drawn_again(tmp_path, monkeypatch):
    """Ids are a stamp plus 16 random bits; a repeat must not make the second artifact fail at its rename."""
    drawn = iter(["model-20261127-155456-d5a6", "model-20261127-155456-d5a6", "model-20261127-155456-0b1c"])
    monkeypatch.setattr("ncfctl.workspace.new_id", lambda kind: next(drawn))
    ws = Workspace(tmp_path)
    for text in ("first", "second"):
        with ws.create("model") as w:
            (w.path / "f.txt").write_text(text)
    assert [(a.id, (a.path / "f.txt").read_text()) for a in ws.list("model")] == [
        ("model-20261127-155456-d5a6", "first"),
        ("model-20261127-155456-0b1c", "second"),
    ]


WRITER = """
import sys, time
from ncfctl.workspace import Workspace
with Workspace(sys.argv[1]).create("model") as writer:
    (writer.path / "half.bin").write_bytes(b"x")
    print(writer.path, flush=True)
    time.sleep(120)
"""


def test_staging_of_a_killed_writer_is_removed_and_a_live_one_kept(tmp_path):
    """A write interrupted by SIGKILL leaves its staging folder; the next write removes it, not a live one."""
    command = [sys.executable, "-c", WRITER, str(tmp_path)]
    writers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        killed, live = (Path(w.stdout.readline().strip()) for w in writers)
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(10)
        assert killed.is_dir() and live.is_dir()
        elsewhere = tmp_path / ".staging" / "model-x.pid999999999.another-host"  # a shared work directory
        unowned = tmp_path / ".staging" / "model-y"  # no owner in the name: nothing proves it stale
        elsewhere.mkdir()
        unowned.mkdir()
        with Workspace(tmp_path).create("model") as w:
            (w.path / "f.txt").write_text("x")
        assert not killed.exists() and (live / "half.bin").is_file() and elsewhere.is_dir() and unowned.is_dir()
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()


def test_cli_version_and_error_exit(run_cli):
    assert run_cli("--version").stdout.startswith("ncfctl ")
    proc = run_cli("--config", "/nonexistent.yaml", "data", check=False)
    assert proc.returncode == 2
    assert "config file not found: /nonexistent.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
