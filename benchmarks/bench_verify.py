"""What verifying a serving bundle before use costs: sha256 of every file, against loading it.

Builds a real bundle of 150 MB+ (a NeuMF with ``--users`` users: its embedding tables are in both
``model.onnx`` and ``fastpath/``), then times, interleaved round by round so a busy machine
slows them alike:

* ``sha256 file_digest``: :func:`ncf_serving.checksums.sha256_file`, what both ncfctl's manifests
  and the container use (``hashlib.file_digest``: fixed-size reads, the GIL released);
* ``sha256 read(N)``: the same digest over ``fh.read(N)`` chunks, N = 64 KiB, 1 MiB, 16 MiB, for
  comparison (whole-file reads would need the file's size in memory);
* ``verify_bundle``: the container's check of ``serving.json`` ``files`` (all files);
* ``load_bundle``: the container's bundle load, verification included;
* ``Predictor.load``: everything before ``/ping`` can say ready except warm-up (bundle + ONNX
  Runtime session).

Prints a table (median seconds of ``--rounds`` rounds) and the bundle's size. Usage::

    python benchmarks/bench_verify.py                   # 250,000 users: ~190 MB
    python benchmarks/bench_verify.py --users 100000 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ncf_serving.bundle import load_bundle, read_spec, verify_bundle
from ncf_serving.checksums import sha256_file
from ncf_serving.predictor import Predictor

from ncfctl.data.dataset import EvalSplit, InteractionData, Interactions
from ncfctl.export import onnx_export
from ncfctl.models import NCF, NCFSpec
from ncfctl.serving.bundle import write_serving_bundle

ITEMS = 3706


def chunked_sha256(path: Path, chunk: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_bundle(folder: Path, users: int) -> int:
    """A real ONNX bundle for a NeuMF of ``users`` x ``ITEMS`` (one training row per user); its bytes."""
    torch.manual_seed(0)
    spec = NCFSpec.from_layers(model_type="neumf", num_users=users, num_items=ITEMS, factors=32, layers=[128, 64, 32])
    model = NCF(spec).eval()
    rows = np.arange(users, dtype=np.int64)
    train = Interactions(rows, rows % ITEMS, np.ones(users, np.float32), np.zeros(users, np.int64))
    empty = EvalSplit(
        Interactions(*(np.zeros(0, dtype) for dtype in (np.int64, np.int64, np.float32, np.int64))),
        np.zeros((0, 1), np.int64),
    )
    data = InteractionData(
        users,
        ITEMS,
        train,
        empty,
        empty,
        np.array([f"u{u}" for u in range(users)]),
        np.array([f"i{i}" for i in range(ITEMS)]),
    )
    example = np.zeros(2, dtype=np.int64)
    onnx_export.save(onnx_export.export(model, example, example, opset=12, dynamic_batch=True), folder / "model.onnx")
    models = [{"batch_size": None, "path": "model.onnx"}]
    write_serving_bundle(folder, model, data, runtime="onnxruntime", models=models, source_model=None, target=None)
    return sum(p.stat().st_size for p in folder.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=250_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ncfctl-bench-verify-") as tmp:
        folder = Path(tmp)
        size = build_bundle(folder, args.users)
        files = sorted(p for p in folder.iterdir() if p.name != "serving.json")
        spec = read_spec(folder)

        def every_file(hash_one: Callable[[Path], str]) -> Callable[[], None]:
            return lambda: [hash_one(path) for path in files]

        cases: dict[str, Callable[[], object]] = {
            "sha256 file_digest": every_file(sha256_file),
            "sha256 read(64 KiB)": every_file(lambda p: chunked_sha256(p, 64 << 10)),
            "sha256 read(1 MiB)": every_file(lambda p: chunked_sha256(p, 1 << 20)),
            "sha256 read(16 MiB)": every_file(lambda p: chunked_sha256(p, 16 << 20)),
            "verify_bundle": lambda: verify_bundle(folder, spec),
            "load_bundle (verifies)": lambda: load_bundle(folder),
            "Predictor.load (verifies)": lambda: Predictor.load(folder, threads=1),
        }
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, call in cases.items():
                start = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - start)
    result = {
        "bundle_bytes": size,
        "files": len(files) + 1,
        "rounds": args.rounds,
        "median_seconds": {name: round(statistics.median(values), 3) for name, values in seconds.items()},
    }
    mb = size / 1e6
    result["sha256_mb_per_s"] = round(mb / result["median_seconds"]["sha256 file_digest"], 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"bundle: {mb:.1f} MB in {result['files']} files, median of {args.rounds} rounds")
    for name, value in result["median_seconds"].items():
        print(f"  {name:28s} {value:7.3f} s")
    print(f"  sha256 throughput: {result['sha256_mb_per_s']} MB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
