"""``ncfctl train --model als | bpr``: matrix-factorisation baselines fitted by the ``implicit`` library.

A tuned dot product can match or beat NeuMF (Rendle et al. 2020, "Neural Collaborative Filtering vs.
Matrix Factorization Revisited"), so a user must be able to check that on their own data under
ncfctl's own protocol. ``implicit`` (maintained, multi-threaded C++/Cython) does the fitting; this
module gives the result everything ``ncfctl train`` gives a NeuMF:

* the same dataset artifact: the training rows as a binary user x item CSR matrix;
* selection on the validation holdout only, as ``fit`` picks its epoch: each value of
  ``baselines.<type>.regularization`` is fitted for ``iterations``, validation HR@K / NDCG@K is
  measured after every iteration (implicit's ``callback``) and the best (regularization, iteration)
  is kept;
* the same evaluation and artifact: the factors become an :class:`~ncfctl.models.NCF` of type
  ``als``/``bpr`` (a GMF whose output layer is fixed to ones, so the score is exactly
  ``user_factors[u] . item_factors[i]``), scored by :func:`~ncfctl.evaluation.torch_score_fn` on
  validation and test, and committed by :func:`~ncfctl.training.service.register_model`. Export,
  the serving fast path and the benchmark then need nothing of their own.

BPR's factors carry implicit's item bias as one extra column (the user side holds a 1 there), so
its model is ``factors + 1`` wide. Threads: implicit runs ``train.threads`` threads and BLAS one
(implicit's own advice: its loops are parallel already). ``random_state`` is the config seed: ALS
is then deterministic at any thread count (each row is solved independently), BPR's lock-free
parallel SGD only with one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ncfctl.config import AlsConfig, BprConfig, Config
from ncfctl.data.dataset import InteractionData
from ncfctl.errors import MissingExtraError, NcfError
from ncfctl.evaluation import evaluate, torch_score_fn
from ncfctl.models import NCF, NCFSpec
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.threads import torch_threads
from ncfctl.training.loop import selection_score

INSTALL_HINT = "pip install 'ncfctl[baselines]' (the implicit library)"
LOSS_LABELS = {"als": "implicit's weighted squared error", "bpr": "1 - train AUC of the sampled pairs"}

IterationCallback = Callable[[dict[str, Any]], None]


@dataclass
class BaselineFit:
    """The kept model and how it was chosen (the shape ``register_model`` reads from ``fit``'s result)."""

    model: NCF
    history: list[dict[str, Any]]  # per iteration of the kept regularization
    best_epoch: int  # the kept iteration
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    seconds: float  # the whole selection: every fit, validation included
    selection: dict[str, Any] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        """What :func:`~ncfctl.training.service.register_model` takes as ``result``."""
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "val_metrics": self.val_metrics,
            "test_metrics": self.test_metrics,
            "stopped_early": False,
            "seconds": self.seconds,
            "loss_label": LOSS_LABELS[self.model.spec.model_type],
        }


def section(config: Config, model_type: str) -> AlsConfig | BprConfig:
    """``config.baselines.als`` or ``config.baselines.bpr``."""
    return getattr(config.baselines, model_type)


def user_items(data: InteractionData):
    """The training rows as implicit wants them: a float32 user x item CSR matrix of ones."""
    from scipy.sparse import csr_matrix  # scipy comes with implicit

    train = data.train
    ones = np.ones(len(train), dtype=np.float32)
    matrix = csr_matrix((ones, (train.users, train.items)), shape=(data.num_users, data.num_items))
    matrix.data[:] = 1.0  # a repeated pair (there are none after cleaning) still counts once
    return matrix


def import_implicit():
    """The implicit library, an optional extra (imported only when a baseline is fitted)."""
    try:
        import implicit
    except ImportError:
        raise MissingExtraError("model types als and bpr need the implicit library", hint=INSTALL_HINT) from None
    return implicit


def estimator(model_type: str, settings: AlsConfig | BprConfig, regularization: float, seed: int, threads: int):
    """implicit's CPU model for one regularization value."""
    implicit = import_implicit()
    common = {
        "factors": settings.factors,
        "regularization": regularization,
        "iterations": settings.iterations,
        "use_gpu": False,
        "num_threads": threads,
        "random_state": seed,
    }
    if model_type == "als":
        return implicit.als.AlternatingLeastSquares(alpha=settings.alpha, calculate_training_loss=True, **common)
    return implicit.bpr.BayesianPersonalizedRanking(learning_rate=settings.learning_rate, **common)


def mf_model(model_type: str, user_factors: np.ndarray, item_factors: np.ndarray) -> NCF:
    """An ``NCF`` of type ``model_type`` holding the factors: its score is their inner product."""
    spec = NCFSpec(
        model_type=model_type,
        num_users=user_factors.shape[0],
        num_items=item_factors.shape[0],
        factors=user_factors.shape[1],
        mlp_user_dim=0,
        mlp_item_dim=0,
        hidden=[],
    )
    model = NCF(spec)
    load_factors(model, user_factors, item_factors)
    return model.eval()


@torch.no_grad()
def load_factors(model: NCF, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
    model.gmf_user.weight.copy_(torch.from_numpy(np.asarray(user_factors, dtype=np.float32)))
    model.gmf_item.weight.copy_(torch.from_numpy(np.asarray(item_factors, dtype=np.float32)))


def _training_loss(model_type: str, extra: tuple, samples: int) -> float | None:
    """ALS's callback passes its loss; BPR's the counts of correctly ordered and of skipped sampled pairs."""
    if model_type == "als":
        return float(extra[0]) if extra and extra[0] is not None else None
    correct, skipped = extra[:2]
    return 1.0 - correct / max(samples - skipped, 1)


class _Selection:
    """Validation after every iteration of every fit; remembers the best model seen."""

    def __init__(self, model_type: str, data: InteractionData, k: int, on_iteration: IterationCallback | None):
        self.model_type, self.data, self.k, self.on_iteration = model_type, data, k, on_iteration
        self.best_score: list[float] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # regularization, iteration, weights
        self.histories: dict[float, list[dict[str, Any]]] = {}

    def fit(self, fitted, matrix, regularization: float) -> None:
        model: NCF | None = None
        history = self.histories.setdefault(regularization, [])
        tick = time.perf_counter()

        def callback(iteration: int, _elapsed: float, *extra) -> None:
            nonlocal model, tick
            fit_seconds = time.perf_counter() - tick  # implicit's work for this iteration
            if model is None:
                model = mf_model(self.model_type, fitted.user_factors, fitted.item_factors)
            else:
                load_factors(model, fitted.user_factors, fitted.item_factors)
            val = evaluate(torch_score_fn(model), self.data, "val", k=self.k, full_ranking=False)
            score = selection_score(val, explicit=False)
            improved = not self.best_score or score > self.best_score
            if improved:
                self.best_score = score
                self.best = (regularization, iteration + 1, {n: t.clone() for n, t in model.state_dict().items()})
            record = {
                "regularization": regularization,
                "epoch": iteration + 1,
                "loss": _training_loss(self.model_type, extra, matrix.nnz),
                "hr": val["hr"],
                "ndcg": val["ndcg"],
                "seconds": time.perf_counter() - tick,  # with its validation, like an epoch's record
                "fit_seconds": fit_seconds,
                "kept": improved,
            }
            history.append(record)
            if self.on_iteration is not None:
                self.on_iteration(record)
            tick = time.perf_counter()

        fitted.fit(matrix, show_progress=False, callback=callback)


def fit_baseline(config: Config, data: InteractionData, on_iteration: IterationCallback | None = None) -> BaselineFit:
    """Fit ``config.model.type`` (als | bpr) for every regularization value; keep the best on validation."""
    from threadpoolctl import threadpool_limits

    model_type = config.model.type
    settings = section(config, model_type)
    threads, k = config.train.threads, config.train.top_k
    started = time.perf_counter()
    import_implicit()  # before the BLAS limit below: it covers only the BLAS libraries already loaded
    matrix = user_items(data)
    selection = _Selection(model_type, data, k, on_iteration)
    with threadpool_limits(limits=1, user_api="blas"), torch_threads(threads):
        for regularization in settings.regularization:
            selection.fit(estimator(model_type, settings, regularization, config.seed, threads), matrix, regularization)
        regularization, iteration, weights = selection.best
        model = mf_model(model_type, weights["gmf_user.weight"].numpy(), weights["gmf_item.weight"].numpy())
        test_metrics = evaluate(torch_score_fn(model), data, "test", k=k, full_ranking=True)
    seconds = time.perf_counter() - started
    history = [{key: v for key, v in r.items() if key != "regularization"} for r in selection.histories[regularization]]
    for record in history:
        record["kept"] = record["epoch"] == iteration
    grid = []
    for value, records in selection.histories.items():
        best = max(records, key=lambda r: selection_score(r, explicit=False))
        grid.append(
            {
                "regularization": value,
                "best_iteration": best["epoch"],
                "hr": best["hr"],
                "ndcg": best["ndcg"],
                "fit_seconds": sum(r["fit_seconds"] for r in records),
            }
        )
    return BaselineFit(
        model=model,
        history=history,
        best_epoch=iteration,
        val_metrics={"hr": history[iteration - 1]["hr"], "ndcg": history[iteration - 1]["ndcg"]},
        test_metrics=test_metrics,
        seconds=seconds,
        selection={
            "regularization": regularization,
            "iteration": iteration,
            # implicit's own time to reach the kept model: its iterations up to the kept one
            "fit_seconds": sum(r["fit_seconds"] for r in history[:iteration]),
            "grid": grid,
            "library": f"implicit {_implicit_version()}",
            "settings": settings.model_dump(),
        },
    )


def _implicit_version() -> str:
    from importlib import metadata

    return metadata.version("implicit")


def check_supported(config: Config) -> None:
    """One line naming the setting an implicit model cannot honour (it fits here, on the CPU, for ranking)."""
    model_type, train = config.model.type, config.train
    problems = {
        "train.task": (train.task != "implicit", f"'{train.task}': it ranks implicit feedback (no ratings task)"),
        "train.backend": (train.backend != "local", f"'{train.backend}': implicit fits on this machine"),
        "train.nproc": (train.nproc != 1, f"{train.nproc}: implicit uses train.threads threads in one process"),
        "train.device": (train.device == "cuda", "'cuda': ncfctl runs implicit's CPU models"),
    }
    for key, (bad, why) in problems.items():
        if bad:
            raise NcfError(
                f"model type {model_type} does not support {key} {why}",
                hint="gmf, mlp and neumf support it" if key != "train.device" else None,
            )


def train_baseline(config: Config, workspace, *, dataset_ref: str | None = None, progress: Progress = NO_PROGRESS):
    """Fit the configured ALS/BPR on the dataset and commit it as a ``model`` artifact (stage ``trained``)."""
    from ncfctl.data.dataset import load_dataset
    from ncfctl.training.service import register_model, resolve_dataset

    check_supported(config)
    dataset = resolve_dataset(config, workspace, dataset_ref, progress)
    data = load_dataset(dataset)
    if data.explicit:
        raise NcfError(f"dataset {dataset.id} holds explicit ratings; model type {config.model.type} ranks implicit")
    settings = section(config, config.model.type)
    total = settings.iterations * len(settings.regularization)
    task = progress.task(f"fit {config.model.type} (implicit)", total=total)

    def on_iteration(record: dict[str, Any]) -> None:
        status = (
            f"regularization {record['regularization']:g} iteration {record['epoch']}: "
            f"validation HR@{config.train.top_k} {record['hr']:.4f}"
        )
        task.advance(status=status)

    fitted = fit_baseline(config, data, on_iteration)
    info = {"selection": fitted.selection}
    return register_model(config, workspace, fitted.model, data, dataset, fitted.result(), info=info)
