"""``ncfctl prune`` / ``ncfctl finetune``: the services, the CLI (in-process), SageMaker against moto."""

from __future__ import annotations

import json
import sys

import boto3
import pytest
import torch
from conftest import assert_one_line_error, commit_model_artifact, tiny_interaction_data
from test_training_sagemaker import play_container

from ncfctl.cli.app import main
from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.masks import load_masks
from ncfctl.models import NCF, NCFSpec, load_model
from ncfctl.pruning.service import finetune_model, prune_model
from ncfctl.training import FitSettings, fit, sagemaker_job
from ncfctl.workspace import Workspace

torch.set_num_threads(1)

SMALL = {"NCFCTL_TRAIN__BATCH_SIZE": "256", "NCFCTL_FINETUNE__LR": "0.005", "NCFCTL_FINETUNE__EPOCHS": "2"}


@pytest.fixture
def trained(workdir, monkeypatch):
    """A NeuMF trained for a few epochs on tiny clustered data, committed as stage 'trained'."""
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    torch.manual_seed(0)
    data = tiny_interaction_data(users=80, items=60, per_user=12)
    model = NCF(NCFSpec.from_layers(model_type="neumf", num_users=80, num_items=60, factors=8, layers=[16, 8]))
    fit(model, data, FitSettings(epochs=4, batch_size=256, lr=0.01, full_ranking=False, device="cpu"))
    return commit_model_artifact(workdir, model, data)


def masked_nonzeros(model, masks) -> int:
    params = dict(model.named_parameters())
    return sum(int(torch.count_nonzero(params[name].detach()[~mask])) for name, mask in masks.items())


def test_prune_magnitude_with_finetune(run_cli, trained, workdir):
    proc = run_cli("prune", "--rate", "0.5", "--finetune", "--json", env=SMALL)
    result = json.loads(proc.stdout)
    pruned, tuned = result, result["finetuned"]  # the pruned model's keys at the top, the fine-tuned one's nested
    assert list(pruned)[:3] == list(tuned)[:3] == ["id", "kind", "path"] and pruned["kind"] == tuned["kind"] == "model"
    assert pruned["parent"] == trained.id and tuned["parent"] == pruned["id"]
    assert pruned["stage"] == "pruned" and tuned["stage"] == "finetuned"
    assert pruned["pruning"]["rate"] == 0.5 and "still present" in pruned["pruning"]["rate_convention"]
    assert pruned["pruning"]["prunable_sparsity_after"] == pytest.approx(0.5, abs=1e-3)
    assert [row["stage"] for row in tuned["stages"]] == ["before pruning", "after pruning", "after fine-tuning"]
    assert [row["model"] for row in tuned["stages"]] == [trained.id, pruned["id"], tuned["id"]]
    assert "(this artifact)" not in proc.stdout
    for row in tuned["stages"]:
        assert {"hr", "ndcg", "full_hr", "full_ndcg", "parameters", "nonzeros", "dense_bytes", "compact_bytes"} <= set(
            row
        )
    before, after_prune, after_tune = tuned["stages"]
    assert before["dense_bytes"] == after_prune["dense_bytes"] == after_tune["dense_bytes"]  # not smaller: said so
    assert after_prune["compact_bytes"] < before["dense_bytes"]
    assert after_prune["nonzeros"] == after_tune["nonzeros"] < 0.55 * before["nonzeros"]
    assert "NOT smaller" in tuned["size"]["note"]
    assert tuned["layers"][-1]["layer"] == "total"
    assert tuned["metrics"]["hr"] == after_tune["hr"] and tuned["metrics"]["file_bytes"] > 0

    workspace = Workspace(workdir)
    for summary in (pruned, tuned):
        folder = workspace.get(summary["id"], "model").path
        model = load_model(folder / "model.pt")
        masks = load_masks(folder / "masks.pt", model)
        assert masked_nonzeros(model, masks) == 0
        assert (folder / "weights.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "recovery.png").is_file()
    tuned_info = workspace.get(tuned["id"]).manifest.info
    assert [p["epoch"] for p in tuned_info.curve] == [0, 1, 2]
    assert tuned_info.finetune["lr"] == 0.005


def test_structured_prune_builds_a_smaller_model(run_cli, trained):
    args = ("--method", "structured", "--rate", "0.5", "--norm", "l2", "--allocation", "uniform", "--json")
    pruned = json.loads(run_cli("prune", *args).stdout)
    assert pruned["finetuned"] is None
    assert pruned["pruning"]["allocation"] == "uniform"
    after = pruned["pruning"]["spec_after"]
    assert (after["factors"], after["mlp_user_dim"], after["mlp_item_dim"], after["hidden"]) == (4, 4, 4, [4])
    folder = trained.path.parent / pruned["id"]
    assert not (folder / "masks.pt").exists()
    assert load_model(folder / "model.pt").gmf_item.weight.shape == (60, 4)
    before_row, after_row = pruned["stages"]
    assert after_row["dense_bytes"] < 0.7 * before_row["dense_bytes"]
    assert after_row["parameters"] < 0.55 * before_row["parameters"]
    assert "itself is smaller" in pruned["size"]["note"]
    assert pruned["layers"][-1]["removed"] == pytest.approx(1 - after_row["parameters"] / before_row["parameters"])


def test_finetune_defaults_to_the_latest_pruned_model(run_cli, trained, workdir):
    workspace = Workspace(workdir)
    pruned = prune_model(load_config(), workspace).pruned
    proc = run_cli("finetune", "--epochs", "1", "--fraction", "0.5", env=SMALL)
    assert "after fine-tuning" in proc.stdout and "NOT smaller" in proc.stdout
    tuned = workspace.latest("model", where={"stage": "finetuned"})
    assert tuned.manifest.parent == pruned.id
    assert tuned.manifest.info.finetune["fraction"] == 0.5
    assert tuned.manifest.info.stages[1]["model"] == pruned.id


def test_gradual_schedule_prunes_in_steps_with_finetuning_between(trained, workdir):
    overrides = {"prune.schedule": "gradual", "prune.steps": 3, "finetune.epochs": 1}
    pruned = prune_model(load_config(overrides=overrides), Workspace(workdir)).pruned
    info = pruned.manifest.info
    assert len(info.pruning["step_rates"]) == 3
    assert info.pruning["prunable_sparsity_after"] == pytest.approx(0.5, abs=1e-3)
    assert [entry["step"] for entry in info.finetune_between_steps] == [1, 2]
    assert [(p["step"], p["epoch"]) for p in info.curve] == [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2)]
    assert (pruned.path / "recovery.png").is_file()


def test_pruning_a_pruned_model_composes(trained, workdir):
    workspace = Workspace(workdir)
    first = prune_model(load_config(), workspace).pruned
    second = prune_model(load_config(), workspace, first.id).pruned
    pruning = second.manifest.info.pruning
    assert pruning["source_stage"] == "pruned" and second.manifest.parent == first.id
    assert pruning["prunable_sparsity_before"] == pytest.approx(0.5, abs=1e-3)
    assert pruning["prunable_sparsity_after"] == pytest.approx(0.75, abs=1e-3) == pruning["prunable_sparsity_target"]
    again = prune_model(load_config(), workspace).pruned  # no --model: the latest *trained* model
    assert again.manifest.parent == trained.id


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["prune", "--rate", "1.5"], ["--rate: config key 'prune.rate'", "1.5"]),
        (["prune", "--method", "lottery"], ["'--method'", "'lottery'", "'magnitude', 'structured'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, trained, args, expected):
    assert_one_line_error(cli(*args), *expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["prune", "--model", "model-nope"], "no model artifact 'model-nope'"), (["finetune"], "prune one first")],
)
def test_missing_models_are_one_line_and_exit_2(trained, monkeypatch, capsys, args, expected):
    """In-process through the console entry point (``main``), which turns NcfError into exit 2."""
    monkeypatch.setattr(sys, "argv", ["ncfctl", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 2 and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"prune.rate": 0.0},
        {"prune.scope": "row"},
        {"prune.norm": "l3"},
        {"prune.allocation": "even"},
        {"finetune.fraction": 0.0},
    ],
)
def test_bad_settings_are_refused_before_any_work(overrides):
    key = next(iter(overrides))
    with pytest.raises(NcfError, match=key.replace(".", r"\.")):
        load_config(overrides=overrides)


def test_rating_models_report_rmse(workdir):
    torch.manual_seed(0)
    data = tiny_interaction_data(users=40, items=30, per_user=10, explicit=True)
    spec = NCFSpec.from_layers(
        model_type="neumf", num_users=40, num_items=30, factors=4, layers=[8, 4], task="explicit"
    )
    commit_model_artifact(workdir, NCF(spec), data)
    config = load_config(overrides={"prune.method": "structured", "finetune.epochs": 1, "train.batch_size": 128})
    tuned = prune_model(config, Workspace(workdir), finetune=True).finetuned
    info = tuned.manifest.info
    assert {"rmse", "mae"} <= set(info.stages[-1]) and "hr" not in info.stages[-1]
    assert info.curve_metric == "validation RMSE" and "rmse" in info.curve[-1]
    assert tuned.manifest.metrics["rmse"] == info.stages[-1]["rmse"]
    after = info.pruning["spec_after"]  # mlp-first: 4 of 8 dims per row, GMF keeps 3 of 4 (MLP floor 1)
    assert info.pruning["allocation"] == "mlp-first"
    assert (after["factors"], after["mlp_user_dim"], after["mlp_item_dim"]) == (3, 1, 1)


def test_gradual_on_sagemaker_is_refused(trained, workdir):
    config = load_config(overrides={"prune.schedule": "gradual", "finetune.backend": "sagemaker"})
    with pytest.raises(NcfError, match="gradual"):
        prune_model(config, Workspace(workdir))


@pytest.mark.slow
def test_finetune_as_a_sagemaker_job_keeps_the_masks(aws_env, trained, workdir, tmp_path, monkeypatch):
    workspace = Workspace(workdir)
    pruned = prune_model(load_config(), workspace).pruned
    real_wait = sagemaker_job.wait_for_job

    def container_then_wait(aws, name, progress=None):
        play_container(aws_env["NCFCTL_AWS__ENDPOINT_URL"], name, tmp_path / "container")
        return real_wait(aws, name, progress)

    monkeypatch.setattr(sagemaker_job, "wait_for_job", container_then_wait)
    tuned = finetune_model(load_config(overrides={"finetune.backend": "sagemaker"}), workspace)
    info = tuned.manifest.info
    assert tuned.manifest.parent == pruned.id and info.finetune["backend"] == "sagemaker"
    assert info.finetune["sagemaker_job"].startswith("ncfctl-finetune-")
    assert [p["epoch"] for p in info.curve] == [0, 1, 2]
    model = load_model(tuned.path / "model.pt")
    masks = load_masks(tuned.path / "masks.pt", model)
    assert masked_nonzeros(model, masks) == 0
    assert not torch.equal(model.mlp[0].weight, load_model(pruned.path / "model.pt").mlp[0].weight)  # it trained
    endpoint = aws_env["NCFCTL_AWS__ENDPOINT_URL"]
    job = boto3.client("sagemaker", endpoint_url=endpoint).describe_training_job(
        TrainingJobName=info.finetune["sagemaker_job"]
    )
    model_uri = next(c for c in job["InputDataConfig"] if c["ChannelName"] == "model")["DataSource"]["S3DataSource"]
    bucket, _, prefix = model_uri["S3Uri"][5:].partition("/")
    listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert sorted(obj["Key"].rsplit("/", 1)[1] for obj in listed) == ["masks.pt", "model.pt"]
    assert json.loads(job["HyperParameters"]["lr"]) == 0.005
