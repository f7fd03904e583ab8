"""ALS / BPR (the implicit library): trained, evaluated, compiled and served like NeuMF; refused where they cannot."""

from __future__ import annotations

import dataclasses
import json

import httpx
import numpy as np
import pytest
import torch
from conftest import add_tiny_dataset, commit_model_artifact, tiny_interaction_data
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from ncfctl.config import AlsConfig, BprConfig, load_config
from ncfctl.data.dataset import EvalSplit
from ncfctl.errors import NcfError
from ncfctl.evaluation import evaluate, torch_score_fn
from ncfctl.models import NCFSpec, load_model
from ncfctl.training import baselines
from ncfctl.training.service import train_model
from ncfctl.workspace import Workspace

TINY = {"NCFCTL_BASELINES__ALS__FACTORS": "8", "NCFCTL_BASELINES__BPR__FACTORS": "8"}


def tiny_data():
    return tiny_interaction_data(users=150, items=60, per_user=12)


def library_model(model_type: str, data, selection: dict, seed: int = 42):
    """implicit's own model, refitted with the kept settings: the selected regularization and iteration count."""
    settings = {"als": AlsConfig, "bpr": BprConfig}[model_type].model_validate(
        {**selection["settings"], "iterations": selection["iteration"]}
    )
    baselines.import_implicit()  # loads its BLAS first, so that the limit below covers it
    with threadpool_limits(limits=1, user_api="blas"):  # as ncfctl fits it (implicit warns otherwise)
        estimator = baselines.estimator(model_type, settings, selection["regularization"], seed, threads=1)
        estimator.fit(baselines.user_items(data), show_progress=False)
    return estimator


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["als", "bpr"])
def test_train_evaluate_compile_and_serve_equal_the_library(model_type, run_cli, workdir, serving_process):
    data = tiny_data()
    dataset = add_tiny_dataset(workdir, data)
    out = json.loads(run_cli("train", "--model", model_type, "--threads", "1", "--json", env=TINY).stdout)
    artifact = Workspace(workdir).get(out["id"])
    info, metrics = artifact.manifest.info, artifact.manifest.metrics
    assert info.model_type == model_type and info.dataset == dataset.id and info.stage == "trained"
    assert {"hr", "ndcg", "full_hr", "full_ndcg"} <= set(metrics) and metrics["hr"] > info.baseline["hr"]
    assert out["selection"] == info.selection and info.selection["library"].startswith("implicit 0.7")
    assert artifact.manifest.config["baselines"][model_type]["factors"] == 8
    assert (artifact.path / "training_curve.png").read_bytes()[:4] == b"\x89PNG"

    again = json.loads(run_cli("train", "--eval-only", artifact.id, "--json").stdout)
    assert again["metrics"] == {key: metrics[key] for key in again["metrics"]}

    library = library_model(model_type, data, info.selection)
    expected = library.user_factors @ library.item_factors.T  # implicit's own scores
    model = load_model(artifact.path / "model.pt")
    width = 8 + (model_type == "bpr")  # BPR's item bias is one more factor
    assert model.spec.model_type == model_type and model.spec.factors == width
    np.testing.assert_array_equal(model.gmf_user.weight.detach().numpy(), library.user_factors)
    np.testing.assert_array_equal(model.gmf_item.weight.detach().numpy(), library.item_factors)

    compiled = json.loads(run_cli("neo", "compile", "--backend", "local", "--model", artifact.id, "--json").stdout)
    bundle = Workspace(workdir).get(compiled["id"]).path
    from ncf_serving.predictor import Predictor

    predictor = Predictor.load(bundle, threads=1)
    users, items = np.meshgrid(np.arange(data.num_users), np.arange(data.num_items), indexing="ij")
    scores = predictor.score(users.ravel(), items.ravel()).reshape(expected.shape)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)  # ONNX Runtime (pairs)
    fast = np.stack([predictor.fastpath.score_all(u) for u in range(data.num_users)])
    np.testing.assert_allclose(fast, expected, rtol=1e-5, atol=1e-5)  # the fast path (top-K)

    indptr, indices = data.seen_items(include_val=True)  # what the server excludes: train + validation items
    seen = csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(data.num_users, data.num_items))
    server = serving_process(bundle)
    for user in (0, 7, 149):
        ids, _ = library.recommend(user, seen[user], N=10, filter_already_liked_items=True)
        body = httpx.post(f"{server.url}/invocations", json={"user_id": f"u{user}", "top_k": 10}, timeout=10).json()
        assert [entry["item_id"] for entry in body["items"]] == [f"i{i}" for i in ids]


@pytest.mark.parametrize("model_type", ["als", "bpr"])
def test_selection_uses_validation_never_test(model_type, workdir):
    """The kept (regularization, iteration) maximises validation HR/NDCG, and a different test split changes nothing."""
    data = tiny_data()
    config = load_config(overrides={f"baselines.{model_type}.factors": 8, "model.type": model_type})
    fitted = baselines.fit_baseline(config, data)
    grid = fitted.selection["grid"]
    best = max(grid, key=lambda row: (row["hr"], row["ndcg"]))
    assert (fitted.selection["regularization"], fitted.selection["iteration"]) == (
        best["regularization"],
        best["best_iteration"],
    )
    assert len(grid) == len(config.baselines.model_dump()[model_type]["regularization"])
    assert [r["epoch"] for r in fitted.history if r["kept"]] == [fitted.best_epoch]
    val = evaluate(torch_score_fn(fitted.model), data, "val", full_ranking=False)
    assert fitted.val_metrics == {"hr": val["hr"], "ndcg": val["ndcg"]}

    rng = np.random.default_rng(1)
    rows = data.test.rows.subset(np.arange(len(data.test.rows)))  # a copy
    rows.items = rng.integers(0, data.num_items, len(rows))
    other = dataclasses.replace(data, test=EvalSplit(rows, rng.permutation(data.test.negatives, axis=1)))
    refit = baselines.fit_baseline(config, other)
    assert refit.selection["regularization"] == fitted.selection["regularization"]
    assert refit.best_epoch == fitted.best_epoch
    torch.testing.assert_close(refit.model.state_dict(), fitted.model.state_dict(), rtol=0, atol=0)


@pytest.mark.slow
def test_threads_and_seed_reach_implicit():
    config = load_config(overrides={"model.type": "als", "train.threads": 2, "seed": 7})
    als = baselines.estimator("als", config.baselines.als, 0.5, config.seed, config.train.threads)
    assert (als.num_threads, als.random_state, als.regularization) == (2, 7, 0.5)
    data = tiny_data()
    first = baselines.fit_baseline(config, data).model.state_dict()
    second = baselines.fit_baseline(config, data).model.state_dict()
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # ALS is deterministic even with 2 threads


def test_mf_model_scores_are_inner_products():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    model = baselines.mf_model("als", users, items)
    scores = torch_score_fn(model).all_items(np.arange(5))
    np.testing.assert_allclose(scores, users @ items.T, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="als ranks implicit feedback"):
        NCFSpec(model_type="als", task="explicit", num_users=5, num_items=7, factors=3, hidden=[])


def test_bad_requests_name_the_model_type_in_one_line(run_cli, workdir):
    data = tiny_data()
    factors = np.ones((150, 4), np.float32), np.ones((60, 4), np.float32)
    als = commit_model_artifact(workdir, baselines.mf_model("als", *factors), data)
    cases = [
        (["prune", "--model", als.id, "--method", "structured"], "is of type als"),
        (["finetune", als.id], "is of type als"),
        (["train", "--model", "bpr", "--task", "explicit"], "model type bpr does not support train.task 'explicit'"),
        (["train", "--model", "als", "--layers", "16,8"], "model type als is fitted by the implicit library"),
        (["train", "--model", "als", "--lr", "0.1"], "does not take --lr"),
        (["train", "--model", "als", "--pretrain-gmf", als.id], "does not take --pretrain-gmf"),
        (["train", "--model", "neumf", "--pretrain-gmf", als.id, "--pretrain-mlp", als.id], "is a als model"),
    ]
    for args, message in cases:
        proc = run_cli(*args, check=False, env=TINY)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    bad = run_cli("train", "--model", "als", check=False, env={"NCFCTL_BASELINES__ALS__REGULARIZATION": "[-1]"})
    assert bad.returncode == 2 and "config key 'baselines.als.regularization.0'" in bad.stderr


def test_service_refuses_resume_and_sagemaker(workdir):
    add_tiny_dataset(workdir, tiny_data())
    workspace = Workspace(workdir)
    with pytest.raises(NcfError, match="model type als does not support `resume`"):
        train_model(load_config(overrides={"model.type": "als"}), workspace, resume=True)
    with pytest.raises(NcfError, match="does not support train.backend 'sagemaker'"):
        train_model(load_config(overrides={"model.type": "als", "train.backend": "sagemaker"}), workspace)
    assert not workspace.list("model")
