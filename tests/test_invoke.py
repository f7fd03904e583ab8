"""``ncfctl invoke``'s request building and error reporting (the HTTP round trips are in test_deploy_*)."""

from __future__ import annotations

import pytest

from ncfctl.cli.errors import cli_message
from ncfctl.cli.invoke import reply_rows
from ncfctl.errors import NcfError
from ncfctl.serving.invoke import build_requests, error_text, read_requests
from ncfctl.workspace import Workspace


def test_flag_forms_become_the_servers_request_bodies():
    assert build_requests("42", item="56") == [{"user_id": "42", "item_id": "56"}]
    assert build_requests("u42", item="i56") == [{"user_id": "u42", "item_id": "i56"}]
    assert build_requests("42", top_k=10) == [{"user_id": "42", "top_k": 10}]
    assert build_requests("42", top_k=3, exclude_seen=False) == [{"user_id": "42", "top_k": 3, "exclude_seen": False}]


@pytest.mark.parametrize("typed", ["007", "1_0", " 1", "\uff11", "+1", "-0", "1e3"])
def test_ids_are_sent_exactly_as_typed(typed):
    """``int()`` would turn each of these into another id ("007" -> 7, "1_0" -> 10, fullwidth 1 -> 1)."""
    assert build_requests(typed, item=typed) == [{"user_id": typed, "item_id": typed}]
    assert build_requests(typed, top_k=1)[0]["user_id"] == typed


@pytest.mark.parametrize(
    ("kwargs", "message", "cli"),
    [
        ({"user": None}, "give `user` with `item` or `top_k`", "give --user with --item or --top-k"),
        ({"user": "1"}, "exactly one of `item`", "exactly one of --item (score a pair) and --top-k"),
        ({"user": "1", "item": "2", "top_k": 3}, "exactly one of `item`", "exactly one of --item"),
        ({"user": "1", "file": "x.jsonl"}, "`file` cannot be combined", "--file cannot be combined with --user/"),
    ],
)
def test_inconsistent_arguments_are_refused(kwargs, message, cli):
    """The service names its arguments; the CLI shows the same line with its flags."""
    with pytest.raises(NcfError, match=message) as err:
        build_requests(**kwargs)
    assert cli in cli_message(err.value) and "`" not in cli_message(err.value)


def test_jsonl_file_lines_are_checked_and_numbered(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"user_id": 1, "item_id": 2}\n\n  \n{"user_id": 1, "top_k": 5}\n')
    assert read_requests(good) == [{"user_id": 1, "item_id": 2}, {"user_id": 1, "top_k": 5}]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": 1, "item_id": 2}\n{"user_id": 1,\n')
    with pytest.raises(NcfError, match=r"bad.jsonl line 2: not valid JSON"):
        read_requests(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(NcfError, match=r"line 1: expected a JSON object, got list"):
        read_requests(bad)
    bad.write_text("\n\n")
    with pytest.raises(NcfError, match="holds no requests"):
        read_requests(bad)
    with pytest.raises(NcfError, match="missing.jsonl"):
        read_requests(tmp_path / "missing.jsonl")


def test_error_text_is_one_line_from_any_body():
    assert error_text(b'{"error": "top_k: must be between 1 and 1000, got 5000", "field": "top_k"}') == (
        "top_k: must be between 1 and 1000, got 5000"
    )
    assert error_text('{"error": "must be an integer", "field": "user_id"}') == "user_id: must be an integer"
    assert error_text(b'{"detail": "Not Found"}') == "Not Found"
    assert error_text(b"<html>\n<body>Bad\nGateway</body></html>") == "<html> <body>Bad Gateway</body></html>"
    assert error_text(b"") == "empty response"


def test_reply_rows_for_each_response_form():
    pair = reply_rows(1, {"user_id": 1, "item_id": 2}, {"user_id": 1, "item_id": 2, "score": 0.5}, 1.0)
    assert pair == [{"#": 1, "user": 1, "item": 2, "score": 0.5, "ms": 1.0}]
    top = reply_rows(
        2, {"user_id": 1, "top_k": 2}, {"items": [{"item_id": 7, "score": 2.0}, {"item_id": 3, "score": 1.0}]}, 1
    )
    assert [(r["rank"], r["item"]) for r in top] == [(1, 7), (2, 3)]
    batch = reply_rows(
        3, {"instances": [{"user_id": 1, "item_id": 2}, {"user_id": 4, "item_id": 5}]}, {"scores": [0.1, 0.2]}, 1
    )
    assert [(r["user"], r["item"], r["score"]) for r in batch] == [(1, 2, 0.1), (4, 5, 0.2)]
    raw = reply_rows(4, {"user_id": 1}, "body", 1)
    assert raw[0]["response"] == '"body"'


def test_invoke_without_a_deployment_is_one_line(run_cli, workdir):
    proc = run_cli("invoke", "--user", "1", "--item", "2", check=False)
    assert proc.returncode == 2 and "no running deployment" in proc.stderr and "Traceback" not in proc.stderr

    with Workspace(workdir).create("deployment", info={"backend": "local", "status": "stopped"}) as writer:
        pass
    proc = run_cli("invoke", "--user", "1", "--item", "2", "--deployment", writer.artifact.id, check=False)
    assert proc.returncode == 2 and "is stopped, not running" in proc.stderr


def test_unreachable_local_server_is_one_line(run_cli, workdir):
    with Workspace(workdir).create(
        "deployment", info={"backend": "local", "status": "running", "url": "http://127.0.0.1:9"}
    ):
        pass
    proc = run_cli("invoke", "--user", "1", "--top-k", "3", check=False)
    assert proc.returncode == 2 and "http://127.0.0.1:9/invocations" in proc.stderr
    assert "check the deployment's status" in proc.stderr
