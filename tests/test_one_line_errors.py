"""One clear line, never a traceback (issue 16, section 6): each input below printed a traceback.

Files are edited and their manifest re-recorded (``rerecord``) where the point is the content
check behind the checksum: a dataset written by another tool, or edited by hand on purpose.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error, rerecord

from ncfctl.errors import MAX_LINE_CHARS, one_line
from ncfctl.models import MODEL_FILE, save_model
from ncfctl.workspace import MANIFEST, Workspace

torch.set_num_threads(1)
TRAIN = ("train", "--epochs", "1", "--factors", "8", "--layers", "16,8", "--batch-size", "256")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"user_id": "caf\u00e9", "item_id": "1"}\n'.encode("latin-1"), "is not UTF-8 text (byte 16 is 0xe9)"),
        ('{"user_id": "1", "item_id": "2"}\n'.encode("utf-16"), "is not UTF-8 text (byte 0 is 0xff)"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1: JSON nested too deeply"),
        (b'{"user_id": ' + b"9" * 4301 + b', "item_id": 1}\n', "line 1: Exceeds the limit (4300 digits)"),
    ],
    ids=["latin-1", "utf-16", "deep-nesting", "4301-digits"],
)
def test_invoke_file_that_is_not_jsonl_utf8(cli, tmp_path, content, message):
    (tmp_path / "requests.jsonl").write_bytes(content)
    assert_one_line_error(cli("invoke", "--file", str(tmp_path / "requests.jsonl")), message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 4, "is not a valid manifest: field '(root)': Invalid JSON"),
        (b"[1, 2]", "is not a valid manifest: field '(root)'"),
        (b'{"kind": "model", "id": "m", "created": "2024-01-01T00:00:00Z", "files": "x"}', "field 'files'"),
        (b'{"kind": "model", "id": "m", "created": "yesterday"}', "field 'created'"),
    ],
    ids=["binary", "a-list", "files-a-string", "created-not-a-date"],
)
def test_broken_manifest_is_one_line(cli, model_artifact, content, message):
    (model_artifact.path / MANIFEST).write_bytes(content)
    assert_one_line_error(cli("prune", "--rate", "0.5"), f"{model_artifact.path / MANIFEST}", message)


def test_dataset_manifest_without_sizes_is_one_line(cli, model_artifact, workdir):
    dataset = Workspace(workdir).get(model_artifact.manifest.info.dataset)
    manifest = json.loads((dataset.path / MANIFEST).read_text())
    del manifest["info"]["num_users"]
    (dataset.path / MANIFEST).write_text(json.dumps(manifest))
    assert_one_line_error(cli(*TRAIN, "--dataset-id", dataset.id), "manifest lacks integer num_users/num_items")
    manifest["info"]["num_users"] = "many"
    (dataset.path / MANIFEST).write_text(json.dumps(manifest))
    assert_one_line_error(
        cli(*TRAIN, "--dataset-id", dataset.id), f"{dataset.path / MANIFEST}", "field 'info.num_users'"
    )


def _edit_parquet(path, edit) -> None:
    frame = pd.read_parquet(path)
    edit(frame).to_parquet(path, index=False)


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("train.parquet", lambda f: f.assign(user=f["user"] - 100), "column 'user' holds -100, outside [0, 60)"),
        ("train.parquet", lambda f: f.assign(item=f["item"] + 2**40), "column 'item' holds 1099511627"),
        ("val.parquet", lambda f: f.rename(columns={"item": "movie"}), "lacks column(s) ['item']"),
        ("train.parquet", lambda f: f.iloc[:0], "train.parquet has no rows"),
        ("user_ids.parquet", lambda f: f.iloc[:-1], "holds 59 ids; the manifest gives 60"),
        ("test.parquet", lambda f: f.assign(user=f["user"].astype(float)), "holds float64, not integer indices"),
    ],
    ids=["negative-ids", "huge-ids", "renamed-column", "no-rows", "short-id-table", "float-ids"],
)
def test_damaged_dataset_parquet_is_one_line(cli, model_artifact, workdir, name, edit, message):
    dataset = Workspace(workdir).get(model_artifact.manifest.info.dataset)
    _edit_parquet(dataset.path / name, edit)
    rerecord(dataset)
    assert_one_line_error(cli(*TRAIN, "--dataset-id", dataset.id), name, message)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "is not a readable .npy file"),
        (lambda p: np.save(p, np.zeros((3, 2), dtype=np.int64)), "expected integer (60, negatives per row)"),
        (lambda p: np.save(p, np.full((60, 20), 99, dtype=np.int64)), "item indices outside [0, 40)"),
        (lambda p: np.save(p, np.zeros((60, 20), dtype=np.float32)), "holds float32 (60, 20)"),
    ],
    ids=["garbage", "wrong-shape", "out-of-range", "floats"],
)
def test_damaged_negatives_npy_is_one_line(cli, model_artifact, workdir, write, message):
    dataset = Workspace(workdir).get(model_artifact.manifest.info.dataset)
    write(dataset.path / "test_negatives.npy")
    rerecord(dataset)
    assert_one_line_error(cli(*TRAIN, "--dataset-id", dataset.id), "test_negatives.npy", message)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda payload: payload["state_dict"].pop("predict.bias"), 'Missing key(s) in state_dict: "predict.bias"'),
        (
            lambda payload: payload["state_dict"].update({"gmf_user.weight": torch.zeros(3, 8)}),
            "size mismatch for gmf_user.weight",
        ),
        (lambda payload: payload["spec"].update({"factors": -1}), "spec field 'factors'"),
        (lambda payload: payload.pop("spec"), "is not an ncfctl model (no spec/state_dict)"),
    ],
    ids=["missing-key", "wrong-shape", "bad-spec", "no-spec"],
)
def test_damaged_model_pt_is_one_line(cli, model_artifact, edit, message):
    path = model_artifact.path / MODEL_FILE
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    rerecord(model_artifact)
    assert_one_line_error(cli("prune", "--rate", "0.5"), "model.pt", message)


def test_model_file_from_save_model_still_loads(model_artifact, tmp_path):
    from ncfctl.models import load_model

    model = load_model(model_artifact.file(MODEL_FILE))
    save_model(tmp_path / "copy.pt", model)
    assert load_model(tmp_path / "copy.pt").spec == model.spec


def test_config_that_is_not_a_yaml_file(cli, tmp_path):
    assert_one_line_error(cli("--config", str(tmp_path), "data"), f"config file {tmp_path} is a directory")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    assert_one_line_error(cli("--config", str(tmp_path / "binary.yaml"), "data"), "is not UTF-8 text")
    (tmp_path / "huge.yaml").write_bytes(b"# comment\n" * 200_000)
    assert_one_line_error(cli("--config", str(tmp_path / "huge.yaml"), "data"), "is larger than 1,048,576 bytes")


def test_environment_and_flag_values(cli):
    result = cli("data", env={"NCFCTL_TRAIN__EPOCHS": "["})
    assert_one_line_error(result, "environment variable NCFCTL_TRAIN__EPOCHS='[' is not a YAML value: line 1")
    assert_one_line_error(cli("data", env={"NCFCTL_WORKDIR": "/dev/null"}), "workdir /dev/null is not a directory")
    assert_one_line_error(cli("data", "--seed", "-1"), "config key 'seed'", "(got -1)")
    assert_one_line_error(cli("data", "--seed", str(2**32)), "config key 'seed'")


def test_yaml_alias_bomb_is_refused_at_once(cli, tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]  # 9**10 strings expanded
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = cli("--config", str(tmp_path / "bomb.yaml"), "data")
    assert time.monotonic() - started < 10
    assert_one_line_error(result, "aliases expand it past 100,000 nodes")
    (tmp_path / "cycle.yaml").write_text("a: &a [*a]\n")
    assert_one_line_error(cli("--config", str(tmp_path / "cycle.yaml"), "data"), "a recursive alias")
    (tmp_path / "fine.yaml").write_text("train: &t {epochs: 2}\nfinetune: {epochs: 1}\n")
    assert cli("--config", str(tmp_path / "fine.yaml"), "data", "--help").exit_code == 0


def test_a_huge_bad_value_prints_a_bounded_line(cli, tmp_path):
    (tmp_path / "big.yaml").write_text(f"train:\n  epochs: '{'x' * 900_000}'\n")
    line = assert_one_line_error(cli("--config", str(tmp_path / "big.yaml"), "data"), "config key 'train.epochs'")
    assert len(line) < MAX_LINE_CHARS + 50 and "characters cut" in line
    assert one_line("a\nb   c") == "a b c" and len(one_line("v" * 10**6)) < MAX_LINE_CHARS + 40


def test_rich_markup_in_a_message_is_printed_literally(cli, tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  epochs: '[bold]many[/bold]'\n")
    assert_one_line_error(cli("--config", str(tmp_path / "c.yaml"), "data"), "'[bold]many[/bold]'")


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "NCFCTL_AWS__ENDPOINT_URL": "http://127.0.0.1:9",  # the discard port: nothing answers
    "NCFCTL_AWS__REGION": "us-east-1",
    "NCFCTL_AWS__BUCKET": "ncfctl-test",
    "NCFCTL_AWS__ROLE_ARN": "arn:aws:iam::123456789012:role/SageMakerRole",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("neo", "compile", "--backend", "sagemaker"),
        ("train", "--backend", "sagemaker", "--epochs", "1"),
        ("deploy", "status"),
        ("invoke", "--user", "u1", "--item", "i1"),
    ],
    ids=["neo-compile", "train", "deploy-status", "invoke"],
)
def test_unreachable_aws_endpoint_is_one_line(cli, model_artifact, workdir, args):
    info = {"backend": "sagemaker", "status": "running", "endpoint_name": "ncf", "region": "us-east-1"}
    with Workspace(workdir).create("deployment", info=info):
        pass
    result = cli(*args, env=AWS_ENV)
    assert_one_line_error(result, "AWS is unreachable: Could not connect to the endpoint URL", "aws.endpoint_url")


def test_json_output_is_untouched_by_error_handling(cli, tmp_path):
    result = cli("neo", "targets", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)


def test_a_variable_that_overlaps_a_section_is_one_line(cli):
    result = cli("data", env={"NCFCTL_TRAIN": "5", "NCFCTL_TRAIN__THREADS": "1"})
    assert_one_line_error(result, "conflicts with another that sets a section on its path")


def test_expected_failures_are_recognised_and_bugs_are_not():
    import botocore.exceptions

    from ncfctl.errors import NcfError, expected_failure

    denied = botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CreateModel")
    assert str(expected_failure(denied)) == "AWS CreateModel failed: AccessDenied: no"
    assert str(expected_failure(PermissionError(13, "Permission denied", "/x/y"))) == "/x/y: Permission denied"
    assert expected_failure(NcfError("as is")).message == "as is"
    assert expected_failure(ValueError("a bug")) is None  # keeps its traceback
    assert expected_failure(KeyError("a bug")) is None
