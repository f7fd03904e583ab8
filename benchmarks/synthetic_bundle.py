"""The serving bundle the serving benchmarks load: ``ncfctl``'s default NeuMF on ML-1M-shaped data.

6,040 users x 3,706 items by default (``items`` scales the catalogue), factors 32, layers
128,64,32, ONNX Runtime, random weights and ~165 seen items per user: the served cost (one
user-side mat-vec, a pass over every item, the seen-item mask) matches a trained model's, with no
training run. Raw ids are the integers 1..N, as in MovieLens.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ncfctl.compile.onnxruntime_local import HARDWARE_SPECIFIC_PASSES, MODEL_FILE
from ncfctl.config import load_config
from ncfctl.data.dataset import EvalSplit, InteractionData, Interactions
from ncfctl.export.runners import ort_session
from ncfctl.models import NCF, NCFSpec
from ncfctl.serving.bundle import write_serving_bundle
from ncfctl.serving.retrieval import choose_retrieval

USERS, ITEMS, SEEN = 6040, 3706, 165
MODEL = "NeuMF, factors 32, layers 128,64,32, ONNX Runtime, random weights"


def _ml1m_shaped_data(rng: np.random.Generator, users: int = USERS, items: int = ITEMS) -> InteractionData:
    """Interactions with SEEN random items per user (only the seen-items index and ids are served)."""
    user_rows = np.repeat(np.arange(users), SEEN)
    rows = Interactions(
        user_rows, rng.integers(0, items, len(user_rows)), np.ones(len(user_rows), np.float32), user_rows * 0
    )
    empty = EvalSplit(rows.subset(np.zeros(len(user_rows), bool)), np.zeros((0, 1), np.int64))
    ids = np.arange(1, users + 1).astype(str), np.arange(1, items + 1).astype(str)
    return InteractionData(users, items, rows, empty, empty, *ids)


def write_synthetic_bundle(folder: Path, users: int = USERS, items: int | None = None) -> Path:
    """The ONNX serving bundle ``ncfctl neo compile --backend local`` would write, into ``folder``: the
    exported graph optimised by ONNX Runtime, its weights in ``model.onnx.data``, and the ANN index
    where the default ``serving.retrieval`` (auto) builds one. ``items``: ITEMS."""
    items = items or ITEMS
    torch.manual_seed(0)
    spec = NCFSpec(num_users=users, num_items=items, factors=32, mlp_user_dim=64, mlp_item_dim=64, hidden=[64, 32])
    model = NCF(spec).eval()
    serving = load_config().serving
    data = _ml1m_shaped_data(np.random.default_rng(0), users, items)
    folder.mkdir(parents=True, exist_ok=True)
    pair = (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    axes = {"user": {0: "n"}, "item": {0: "n"}, "score": {0: "n"}}
    with tempfile.TemporaryDirectory(prefix="synthetic-export-") as tmp:
        exported = Path(tmp) / MODEL_FILE
        torch.onnx.export(
            model, pair, str(exported), dynamo=False, opset_version=12,
            input_names=["user", "item"], output_names=["score"], dynamic_axes=axes,
        )  # fmt: skip
        ort_session(exported, optimized_path=folder / MODEL_FILE, disabled_optimizers=HARDWARE_SPECIFIC_PASSES)
    write_serving_bundle(
        folder, model, data, runtime="onnxruntime", models=[{"batch_size": None, "path": MODEL_FILE}],
        source_model="bench", target="local", ann=serving.ann if choose_retrieval(serving, spec).ann else None,
    )  # fmt: skip
    return folder
