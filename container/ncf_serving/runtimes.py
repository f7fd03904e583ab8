"""Runtime adapters (ONNX Runtime, DLR, TorchScript) behind one call: scores for (user, item) index pairs.

Each adapter runs one model file on int64 ``user``/``item`` vectors and returns float32 raw scores.
Neo compiles static shapes, so a bundle may hold one model per batch size; :class:`Scorer` picks
the smallest static batch that fits the request, pads it (repeating the first pair; padded
outputs are dropped) and splits larger requests into chunks of the largest size. A dynamic-batch
model (``batch_size: null``) is called as is. Runtime libraries are imported only by the adapter
that needs them, so the image carries just one of them (torch only for ``torchscript``).
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from ncf_serving.bundle import BundleError, ServingSpec
from ncf_serving.dlr_phone_home import disable_dlr_phone_home

LIBRARIES = {"onnxruntime": "onnxruntime", "dlr": "dlr", "torchscript": "torch"}


def import_runtime_library(runtime: str) -> None:
    """Import the library behind ``runtime`` now (the server's master does, before forking workers)."""
    if runtime == "dlr":
        disable_dlr_phone_home()
    if runtime == "onnxruntime":
        disable_onnxruntime_telemetry()
    importlib.import_module(LIBRARIES[runtime])


class ModelRuntime(Protocol):
    def run(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...


def disable_onnxruntime_telemetry() -> None:
    """Keep ONNX Runtime from phoning home; call before the first ``import onnxruntime``.

    ORT 1.32 on Linux starts a 1DS telemetry uploader when it is imported: DNS lookups of
    mobile.events.data.microsoft.com and a device id plus an event cache under
    ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` ("Failed to persist telemetry device ID" where
    the home folder is not writable, as for the image's user). ``ORT_DISABLE_TELEMETRY=1`` set
    before the import turns it off for the process; ``onnxruntime.disable_telemetry_events()``
    after the import does not stop the uploader (both measured with strace). Forced, not defaulted:
    the serving image never reports, whatever it inherits.
    """
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"


class OnnxModel:
    """ONNX Runtime, CPU provider, a fixed number of intra-op threads (session.run is thread-safe)."""

    def __init__(self, path: Path, threads: int, input_names: list[str]):
        disable_onnxruntime_telemetry()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise BundleError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
        inputs = {node.name: node for node in self.session.get_inputs()}
        names = input_names if all(n in inputs for n in input_names) else list(inputs)[:2]
        if len(names) != 2:
            raise BundleError(f"{path}: expected two inputs (user, item), the model has {list(inputs)}")
        self.user_name, self.item_name = names
        self.dtypes = [np.int32 if inputs[n].type == "tensor(int32)" else np.int64 for n in names]
        self.output = self.session.get_outputs()[0].name

    def run(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        feeds = {self.user_name: users.astype(self.dtypes[0]), self.item_name: items.astype(self.dtypes[1])}
        return np.asarray(self.session.run([self.output], feeds)[0], dtype=np.float32).reshape(-1)


class DlrModel:
    """A Neo/DLR model folder (``compiled.so`` + ``.params`` + ``.json``, optionally its own ``libdlr.so``).

    TVM-compiled NCF models take named int64 ``user``/``item`` inputs. A single-input model (DLR's
    Treelite backend, whose one input is a float feature matrix) gets the pair as two float
    features per row. DLR keeps per-model input/output state, so calls are serialised.
    """

    def __init__(self, folder: Path, threads: int, input_names: list[str]):
        disable_dlr_phone_home()
        import dlr

        if not folder.is_dir():
            raise BundleError(f"{folder}: a DLR model must be a folder of compiled files")
        # libdlr sizes its thread pool from the environment when the model is created.
        for variable in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(variable, str(threads))
        try:
            self.model = dlr.DLRModel(str(folder), "cpu", 0)
        except Exception as exc:  # DLR wraps libdlr failures in several exception types
            raise BundleError(f"{folder}: DLR cannot load it: {str(exc).splitlines()[0]}") from None
        names = list(self.model.get_input_names())
        if all(n in names for n in input_names):
            dtypes = dict(zip(names, self.model.get_input_dtypes(), strict=True))
            self.named = [(n, np.dtype(dtypes.get(n) or "int64")) for n in input_names]
        elif len(names) == 1:
            self.named = []
            self.features_name = names[0]
        else:
            raise BundleError(f"{folder}: DLR model inputs {names} are neither {input_names} nor one feature matrix")
        self.lock = threading.Lock()

    def run(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.named:
            feeds = {
                name: values.astype(dtype) for (name, dtype), values in zip(self.named, (users, items), strict=True)
            }
        else:
            feeds = {self.features_name: np.stack([users, items], axis=1).astype(np.float32)}
        with self.lock:
            outputs = self.model.run(feeds)
        return np.asarray(outputs[0], dtype=np.float32).reshape(-1)


class TorchScriptModel:
    """A traced TorchScript file (``model.pth``); torch is imported only here."""

    def __init__(self, path: Path, threads: int, input_names: list[str]):
        import torch

        torch.set_num_threads(threads)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # torch raises RuntimeError/ValueError variants for bad archives
            raise BundleError(f"{path}: torch.jit cannot load it: {str(exc).splitlines()[0]}") from None
        self.torch = torch

    def run(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64)))
        return out.numpy().astype(np.float32, copy=False).reshape(-1)


ADAPTERS = {"onnxruntime": OnnxModel, "dlr": DlrModel, "torchscript": TorchScriptModel}


class Scorer:
    """Scores any number of pairs with the bundle's models, honouring static batch sizes."""

    def __init__(self, models: list[tuple[int | None, ModelRuntime]]):
        self.models = sorted(models, key=lambda entry: entry[0] or 0)
        self.dynamic = self.models[0][0] is None

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.dynamic:
            return self.models[0][1].run(users, items)
        out = np.empty(len(users), dtype=np.float32)
        start = 0
        while start < len(users):
            remaining = len(users) - start
            size, model = next(((b, m) for b, m in self.models if b >= remaining), self.models[-1])
            count = min(size, remaining)
            chunk_users, chunk_items = users[start : start + count], items[start : start + count]
            if count < size:
                pad = size - count
                chunk_users = np.concatenate([chunk_users, np.repeat(chunk_users[:1], pad)])
                chunk_items = np.concatenate([chunk_items, np.repeat(chunk_items[:1], pad)])
            scores = model.run(chunk_users, chunk_items)
            if scores.shape != (size,):
                raise RuntimeError(f"model for batch {size} returned shape {scores.shape}, expected ({size},)")
            out[start : start + count] = scores[:count]
            start += count
        return out


def load_scorer(spec: ServingSpec, folder: Path, threads: int) -> Scorer:
    """Open every model file listed in ``serving.json`` with the runtime it names."""
    adapter = ADAPTERS[spec.runtime]
    models: list[tuple[int | None, ModelRuntime]] = []
    for entry in spec.models:
        path = folder / entry.path
        if not path.exists():
            raise BundleError(f"{path} not found (serving.json models[].path, runtime {spec.runtime})")
        models.append((entry.batch_size, adapter(path, threads, spec.inputs)))
    return Scorer(models)
