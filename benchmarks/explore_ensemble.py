"""Does averaging independently trained NeuMFs close the gap to ALS? (an issue 13 lever).

Trains ``--members`` models on one dataset artifact through ncfctl's own ``fit`` (each its own
seed, each keeping the epoch its validation HR@10 picks, as ``ncfctl train`` does), then scores
the average of the first 1, 2, ... members' scores on validation and test (sampled and
full-ranking HR@10). An average of k NeuMFs is itself one NeuMF k times as wide (block-diagonal
tower), so this asks whether variance, not the model family, is what ALS beats.

Options (a JSON object; keys absent = the "small" configuration of README's table): ``type
factors layers lr neg epochs``.

Usage::

    nice -n 10 python benchmarks/explore_ensemble.py --workdir W --members 5 '{"factors": 64}'
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from explore_training import build  # this folder is on sys.path when the script runs

from ncfctl.data.dataset import load_dataset
from ncfctl.evaluation import evaluate, torch_score_fn
from ncfctl.models import NCF
from ncfctl.training.loop import FitSettings, fit
from ncfctl.workspace import Workspace


class AverageScorer:
    """The mean of several scorers' scores (the ``score_fn`` protocol, with ``all_items``)."""

    def __init__(self, models: list[NCF]):
        self.scorers = [torch_score_fn(model) for model in models]

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.mean([scorer(users, items) for scorer in self.scorers], axis=0)

    def all_items(self, users: np.ndarray) -> np.ndarray:
        return np.mean([scorer.all_items(users) for scorer in self.scorers], axis=0)


def train_member(options: dict, data, seed: int) -> NCF:
    model = build({"factors": 64, "layers": [32, 16, 8], **options}, data, seed)
    settings = FitSettings(
        epochs=options.get("epochs", 20), lr=options.get("lr", 0.001), negatives=options.get("neg", 16), seed=seed
    )
    result = fit(model, data, settings)
    print(
        f"member seed {seed}: epoch {result.best_epoch}, test {result.test_metrics['hr']:.4f} / "
        f"{result.test_metrics['full_hr']:.4f}",
        flush=True,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("options", nargs="?", default="{}", help="JSON object of options (see the module docstring)")
    parser.add_argument("--workdir", required=True, help="a workspace holding the dataset artifact")
    parser.add_argument("--members", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = json.loads(args.options)
    data = load_dataset(Workspace(args.workdir).require_latest("dataset", "run bench_baselines.py first"))
    started = time.perf_counter()
    models = [train_member(options, data, seed) for seed in range(1, args.members + 1)]
    seconds = time.perf_counter() - started
    rows = []
    for count in range(1, len(models) + 1):
        scorer = AverageScorer(models[:count])
        val, test = evaluate(scorer, data, "val"), evaluate(scorer, data, "test")
        rows.append({"members": count, "val": [val["hr"], val["full_hr"]], "test": [test["hr"], test["full_hr"]]})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"options": options, "seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main()
