"""Recall@10 against latency for ANN top-K retrieval on a trained model, one thread.

Takes the newest model of a workspace (``--workdir``; e.g. one ``bench_scale.py --keep`` left, or
the goal run's) and its dataset, builds the item vectors the compile step indexes
(``[gmf_item | mean MLP score]``, :mod:`ncfctl.serving.retrieval`) and, for ``--users`` test users,
measures per request, exactly as the server runs it (:class:`ncf_serving.retrieval.AnnRetrieval`:
search with the user's seen items filtered, then exact re-ranking by the fast path):

* IVF-Flat (``serving.ann.lists`` lists) for each ``nprobe`` and number of candidates;
* with ``--hnsw``, HNSW-Flat (M 16 and 32, ef_construction 64) for each ``ef``;
* the exact fast path (recall 1 by definition), as the reference line;
* exact inner-product search over the vectors, with and without the mean-MLP dimension (what
  the candidates could be at best).

Writes ``--out`` (PNG: recall@10 against p50 ms) and the numbers as JSON beside it. Usage::

    python benchmarks/bench_retrieval.py --workdir /tmp/ncfctl-scale-1m-xxxx --out docs/results/retrieval.png
    python benchmarks/bench_retrieval.py --workdir W --hnsw --users 300
"""

from __future__ import annotations

import argparse
import os

ARGS = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="an ncfctl workspace with a trained model")
    parser.add_argument("--users", type=int, default=300, help="test users (seeded sample)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per setting")
    parser.add_argument("--hnsw", action="store_true", help="also build and sweep HNSW indexes")
    parser.add_argument("--out", default="retrieval.png", help="PNG path (JSON written beside it)")
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"  # before numpy / faiss load their thread pools

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from ncf_serving.bundle import ANN_INDEX, RetrievalSpec  # noqa: E402
from ncf_serving.checksums import sha256_file  # noqa: E402
from ncf_serving.fastpath import FastPath  # noqa: E402
from ncf_serving.retrieval import AnnRetrieval  # noqa: E402

from ncfctl.config import load_config  # noqa: E402
from ncfctl.data.dataset import load_dataset  # noqa: E402
from ncfctl.models import MODEL_FILE, load_model  # noqa: E402
from ncfctl.serving.bundle import fastpath_arrays  # noqa: E402
from ncfctl.serving.retrieval import build_index, item_vectors  # noqa: E402
from ncfctl.workspace import Workspace  # noqa: E402

K = 10
CANDIDATES = (20, 50, 100, 200)
NPROBES = (1, 2, 4, 8, 16, 32, 64)
EFS = (20, 50, 100, 200)


class Setup:
    def __init__(self, workdir: str, users: int):
        workspace = Workspace(Path(workdir))
        model_artifact = workspace.latest("model")
        if model_artifact is None:
            raise SystemExit(f"no model in {workdir}")
        data = load_dataset(workspace.get(model_artifact.manifest.info.dataset, "dataset"))
        self.arrays = fastpath_arrays(load_model(model_artifact.file(MODEL_FILE)))
        self.fastpath = FastPath(self.arrays)
        self.indptr, self.indices = data.seen_items()
        test_users = np.unique(data.test.rows.users)
        self.users = np.random.default_rng(0).choice(test_users, size=min(users, len(test_users)), replace=False)
        started = time.perf_counter()
        self.exact = {int(u): self.fastpath.top_k(int(u), K, self.seen(int(u)))[0] for u in self.users}
        self.exact_ms = (time.perf_counter() - started) / len(self.users) * 1e3
        self.num_items = self.fastpath.num_items

    def seen(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def recall(self, answers: dict[int, np.ndarray]) -> float:
        return float(np.mean([len(np.intersect1d(answers[u], self.exact[u])) / K for u in self.exact]))


def timed(setup: Setup, answer, requests: int) -> tuple[float, dict[int, np.ndarray]]:
    """p50 ms of ``answer(user)`` over ``requests`` calls cycling the users, and each user's answer."""
    answers = {int(u): answer(int(u)) for u in setup.users}
    seconds = []
    for n in range(requests):
        user = int(setup.users[n % len(setup.users)])
        started = time.perf_counter()
        answer(user)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds) * 1e3), answers


def ivf_points(setup: Setup, requests: int) -> list[dict]:
    ann = load_config(environ={}).serving.ann
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        build_index(Path(tmp), setup.arrays, ann, seed=42, threads=1)
        build_s = time.perf_counter() - started
        digest = sha256_file(Path(tmp) / ANN_INDEX)
        points = []
        for candidates in CANDIDATES:
            for nprobe in NPROBES:
                settings = RetrievalSpec(candidates=candidates, nprobe=nprobe)
                retrieval = AnnRetrieval.load(Path(tmp), settings, digest, setup.fastpath)
                p50, answers = timed(
                    setup, lambda u, r=retrieval: r.top_k(setup.fastpath, u, K, setup.seen(u))[0], requests
                )
                points.append(
                    {"index": "ivf-flat", "lists": ann.lists, "candidates": candidates, "nprobe": nprobe}
                    | {"p50_ms": p50, "recall": setup.recall(answers), "build_s": build_s}
                )
                print(json.dumps(points[-1]), flush=True)
    return points


def hnsw_points(setup: Setup, requests: int) -> list[dict]:
    ann = load_config(environ={}).serving.ann
    vectors = item_vectors(setup.arrays, ann, seed=42)
    queries = np.hstack([setup.fastpath.gmf_user, np.ones((setup.fastpath.num_users, 1), np.float32)])
    points = []
    for m in (16, 32):
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
        index.add(vectors)
        build_s = time.perf_counter() - started
        for ef in EFS:

            def answer(user: int, index=index, ef=ef) -> np.ndarray:
                seen = faiss.IDSelectorBatch(np.ascontiguousarray(setup.seen(user), dtype=np.int64))
                unseen = faiss.IDSelectorNot(seen)
                params = faiss.SearchParametersHNSW(efSearch=ef, sel=unseen)
                found = index.search(queries[user : user + 1], ef, params=params)[1][0]
                found = found[found >= 0]
                return setup.fastpath.rank(found, setup.fastpath.score_items(user, found), K)[0]

            p50, answers = timed(setup, answer, requests)
            points.append(
                {"index": f"hnsw M={m}", "candidates": ef, "ef": ef, "p50_ms": p50}
                | {"recall": setup.recall(answers), "build_s": build_s}
            )
            print(json.dumps(points[-1]), flush=True)
    return points


def exact_search_recall(setup: Setup) -> list[dict]:
    """Exact inner-product search over the vectors (no ANN error): the candidates' ceiling."""
    ann = load_config(environ={}).serving.ann
    vectors = item_vectors(setup.arrays, ann, seed=42)
    out = []
    for label, columns in (("gmf only", slice(0, -1)), ("gmf + mean mlp", slice(None))):
        for candidates in (10, *CANDIDATES):
            answers = {}
            for user in setup.exact:
                query = np.append(setup.fastpath.gmf_user[user], 1.0).astype(np.float32)[columns]
                scores = vectors[:, columns] @ query
                scores[setup.seen(user)] = -np.inf
                found = np.argpartition(-scores, candidates)[:candidates]
                answers[user] = setup.fastpath.rank(found, setup.fastpath.score_items(user, found), K)[0]
            out.append({"vectors": label, "candidates": candidates, "recall": setup.recall(answers)})
            print(json.dumps(out[-1]), flush=True)
    return out


def plot(points: list[dict], exact_ms: float, num_items: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[dict]] = {}
    for point in points:
        label = f"{point['index']}, {point['candidates']} candidates" if "nprobe" in point else point["index"]
        series.setdefault(label, []).append(point)
    for label, group in series.items():
        axis.plot([p["p50_ms"] for p in group], [p["recall"] for p in group], marker="o", label=label)
    axis.axvline(exact_ms, color="black", linestyle="--", label=f"exact fast path ({exact_ms:.0f} ms)")
    axis.axhline(0.95, color="grey", linestyle=":", label="recall 0.95")
    axis.set_xscale("log")
    axis.set_xlabel("top-10 p50 per request, ms (one thread; search + exact re-rank)")
    axis.set_ylabel("recall@10 vs the exact top-10")
    axis.set_title(f"ANN retrieval on {num_items:,} items")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    faiss.omp_set_num_threads(1)
    setup = Setup(ARGS.workdir, ARGS.users)
    print(json.dumps({"items": setup.num_items, "users": len(setup.users), "exact_ms": setup.exact_ms}), flush=True)
    points = ivf_points(setup, ARGS.requests) + (hnsw_points(setup, ARGS.requests) if ARGS.hnsw else [])
    result = {
        "items": setup.num_items,
        "users": len(setup.users),
        "exact_ms": setup.exact_ms,
        "points": points,
        "exact_search": exact_search_recall(setup),
    }
    out = Path(ARGS.out)
    plot(points, setup.exact_ms, setup.num_items, out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
