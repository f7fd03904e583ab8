"""Is NCF worth it? ``ncfctl train`` configurations against implicit's ALS and BPR, mean ± SE over seeds.

Runs the real services on a MovieLens archive (default: ml-latest-small, never copied anywhere):

1. per seed (``--seeds``), one workspace ``<workdir>/seed-<n>`` holding ``ncfctl data`` of the archive
   with ``seed = n`` (the evaluation negatives; the leave-one-out split itself does not depend on it);
2. per configuration (``--config NAME:KEY=VALUE;KEY=VALUE``, dotted config keys, values read as
   YAML; ``NAME:`` alone is the defaults; ``pretrain=true`` first trains a GMF and an MLP with the
   same settings and starts the NeuMF from them, the paper's initialisation) and seed:
   ``train_model`` with ``seed = n``, so the epoch (or ALS/BPR iteration and regularization) is
   chosen on the validation holdout, exactly as ``ncfctl train`` does. ``NCFCTL_*`` variables
   apply to every configuration;
3. per run: test HR@10 sampled (99 negatives) and full ranking, the same two on validation (full
   ranking on validation is measured here on the kept model: it is what a configuration should be
   chosen by), the kept epoch, the training seconds (the whole command: every epoch or iteration
   with its validation pass) and the seconds until the kept epoch was done (time to quality).

Prints one row per configuration: mean ± standard error over seeds, and the paired difference to
``--reference`` (mean ± SE of the per-seed differences; default: the configuration named ``als``).
Each run is appended to ``--results`` (JSON lines) as it finishes, and runs already there are not
repeated, so a sweep can be stopped and resumed. ``--jobs N`` trains N runs at once, one thread each.

Usage::

    nice -n 10 python benchmarks/bench_baselines.py --seeds 42,100,101,102,103 \\
        --config neumf: --config als:model.type=als --config bpr:model.type=bpr
    python benchmarks/bench_baselines.py --seeds 42,100 --results sweep.jsonl \\
        --config 'neg8:train.negatives=8' --config 'wd:train.weight_decay=1e-6;train.lr=0.001'
    python benchmarks/bench_baselines.py --dataset synthetic --source '' --seeds 42 \\
        --config neumf: --config als:model.type=als --config bpr:model.type=bpr      # the embedded default
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

PRETRAIN = "pretrain"  # a --config key of this script: true = NeuMF from GMF + MLP trained first (times add up)
METRICS = ("hr", "full_hr", "val_hr", "val_full_hr", "best_epoch", "seconds_to_kept", "train_seconds")
HEADERS = {
    "hr": "HR@10",
    "full_hr": "full HR@10",
    "val_hr": "val HR@10",
    "val_full_hr": "val full HR@10",
    "best_epoch": "kept epoch",
    "seconds_to_kept": "s to kept",
    "train_seconds": "train s",
}


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """``"neg8:train.negatives=8;train.lr=0.001"`` -> ``("neg8", {"train.negatives": 8, "train.lr": 0.001})``."""
    name, _, body = text.partition(":")
    if not name:
        raise SystemExit(f"--config {text!r}: expected NAME:KEY=VALUE;KEY=VALUE (NAME: alone for the defaults)")
    overrides = {}
    for pair in filter(None, (p.strip() for p in body.split(";"))):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--config {text!r}: {pair!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default="/work/shared/data/ml-latest-small.zip", help="MovieLens archive ('' for synthetic)"
    )
    parser.add_argument("--dataset", default="ml-latest-small", help="its data.dataset name (or synthetic)")
    parser.add_argument("--workdir", help="folder of the per-seed workspaces (default: a temporary one)")
    parser.add_argument("--seeds", default="42,100,101,102,103", help="comma-separated seeds")
    parser.add_argument("--config", action="append", default=[], help="NAME:KEY=VALUE;... (repeatable)")
    parser.add_argument("--reference", default="als", help="configuration the paired differences are against")
    parser.add_argument("--results", help="JSON-lines file of finished runs: appended to, and reused")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (one thread each)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    args.configs = dict(parse_config(text) for text in (args.config or ["neumf:", "als:model.type=als"]))
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    return args


def prepare(workdir: Path, seed: int, dataset: str, source: str) -> str:
    """The seed's dataset id in its own workspace (prepared once, then reused)."""
    from ncfctl.config import load_config
    from ncfctl.data.prepare import prepare_dataset
    from ncfctl.workspace import Workspace

    workspace = Workspace(workdir)
    found = workspace.latest("dataset", where={"dataset": dataset, "seed": seed, "explicit": False})
    if found is not None:
        return found.id
    overrides = {"workdir": str(workdir), "seed": seed, "data.dataset": dataset, "data.source": source or None}
    config = load_config(overrides=overrides)
    return prepare_dataset(config, workspace).id


def run_one(workdir: str, dataset_id: str, name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one configuration for one seed (in a worker process); its metrics and timings."""
    import torch

    from ncfctl.config import load_config
    from ncfctl.data.dataset import load_dataset
    from ncfctl.evaluation import evaluate, torch_score_fn
    from ncfctl.models import MODEL_FILE, load_model
    from ncfctl.training.service import train_model
    from ncfctl.workspace import Workspace

    torch.set_num_threads(1)
    settings = {key: value for key, value in overrides.items() if key != PRETRAIN}
    config = load_config(overrides={**settings, "workdir": workdir, "seed": seed, "train.threads": 1})
    workspace = Workspace(workdir)
    parts, pretrain_seconds = {}, 0.0
    if overrides.get(PRETRAIN):  # the paper's NeuMF init: GMF and MLP trained first, same settings
        for part in ("gmf", "mlp"):
            trained = train_model(
                config.model_copy(update={"model": config.model.model_copy(update={"type": part})}),
                workspace,
                dataset_ref=dataset_id,
            )
            parts[part], pretrain_seconds = trained.id, pretrain_seconds + trained.manifest.info.train_seconds
    artifact = train_model(
        config, workspace, dataset_ref=dataset_id, pretrain_gmf=parts.get("gmf"), pretrain_mlp=parts.get("mlp")
    )
    info, metrics = artifact.manifest.info, artifact.manifest.metrics
    data = load_dataset(workspace.get(dataset_id, "dataset"))
    val = evaluate(torch_score_fn(load_model(artifact.file(MODEL_FILE))), data, "val", k=config.train.top_k)
    best = info.best_epoch
    return {
        "config": name,
        "overrides": overrides,
        "seed": seed,
        "model": artifact.id,
        "model_type": info.model_type,
        "hr": metrics["hr"],
        "full_hr": metrics["full_hr"],
        "val_hr": val["hr"],
        "val_full_hr": val["full_hr"],
        "best_epoch": best,
        "epochs_run": len(info.history),
        "seconds_to_kept": pretrain_seconds + sum(record["seconds"] for record in info.history[:best]),
        "train_seconds": pretrain_seconds + info.train_seconds,
        "selection": info.selection,
        "popularity": {key: info.baseline[key] for key in ("hr", "full_hr")},
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan"))


def summarize(runs: list[dict[str, Any]], names: list[str], reference: str) -> list[dict[str, Any]]:
    """Per configuration: mean and SE over seeds; paired differences to ``reference`` on shared seeds."""
    by_config: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_config.setdefault(run["config"], {})[run["seed"]] = run
    rows = []
    for name in names:
        seeds = by_config.get(name, {})
        if not seeds:
            continue
        row: dict[str, Any] = {"config": name, "seeds": len(seeds)}
        for key in METRICS:
            row[key] = mean_se([run[key] for run in seeds.values()])
        ref = by_config.get(reference, {})
        shared = sorted(set(seeds) & set(ref))
        if name != reference and shared:
            for key in ("hr", "full_hr"):
                row[f"diff_{key}"] = mean_se([seeds[s][key] - ref[s][key] for s in shared])
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], reference: str) -> str:
    def cell(pair: tuple[float, float], fmt: str) -> str:
        mean, se = pair
        return f"{mean:{fmt}} ± {se:{fmt.lstrip('+')}}"

    headers = ["config", "seeds", *(HEADERS[key] for key in METRICS), f"Δ HR@10 vs {reference}", "Δ full HR@10"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [row["config"], str(row["seeds"])]
        cells += [cell(row[key], ".1f" if "seconds" in key or key == "best_epoch" else ".4f") for key in METRICS]
        cells += [cell(row[f"diff_{key}"], "+.4f") if f"diff_{key}" in row else "" for key in ("hr", "full_hr")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_results(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> int:
    args = parse_args()
    results_path = Path(args.results) if args.results else None
    runs = load_results(results_path)
    done = {(run["config"], run["seed"], json.dumps(run["overrides"], sort_keys=True)) for run in runs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or Path(tmp) / "workspaces")
        datasets = {seed: prepare(root / f"seed-{seed}", seed, args.dataset, args.source) for seed in args.seeds}
        todo = [
            (str(root / f"seed-{seed}"), datasets[seed], name, overrides, seed)
            for name, overrides in args.configs.items()
            for seed in args.seeds
            if (name, seed, json.dumps(overrides, sort_keys=True)) not in done
        ]
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_one, *job) for job in todo]):
                run = future.result()
                runs.append(run)
                if results_path is not None:
                    with results_path.open("a", encoding="utf-8") as out:
                        out.write(json.dumps(run) + "\n")
                print(
                    f"{run['config']} seed {run['seed']}: HR@10 {run['hr']:.4f} full {run['full_hr']:.4f} "
                    f"(val {run['val_hr']:.4f} / {run['val_full_hr']:.4f}) epoch {run['best_epoch']} "
                    f"{run['train_seconds']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    wanted = [run for run in runs if run["config"] in args.configs and run["seed"] in args.seeds]
    rows = summarize(wanted, list(args.configs), args.reference)
    if args.json:
        print(json.dumps({"rows": rows, "runs": wanted}, indent=2))
    else:
        print(markdown(rows, args.reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
