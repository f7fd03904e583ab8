"""The local compiler: an offline ONNX Runtime build of the model for a CPU target.

This is the honest local stand-in for Neo: the exported ONNX graph is optimised once, ahead of
time, at ONNX Runtime's highest level (constant folding, Gemm+ReLU fusion, ...), and the
optimised graph is what ships, so the container starts without re-optimising. The one
hardware-specific pass at that level, ``NchwcTransformer`` (a blocked memory layout tuned to the
build host's vector width), is switched off: it only rewrites convolutions, which NCF has none
of, and leaving it on would tie the saved graph to this machine rather than the target. The
report compares the shipped file against PyTorch eager for parity and speed at the target's
thread count.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from ncfctl.compile import speed
from ncfctl.compile.base import CompileOutput, CompileRequest
from ncfctl.errors import NcfError
from ncfctl.export.preflight import DYNAMIC_PARITY_BATCHES, check_parity, export_checked, random_pairs
from ncfctl.export.runners import ort_scorer, ort_session, torch_scorer
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.threads import torch_threads

MODEL_FILE = "model.onnx"
HARDWARE_SPECIFIC_PASSES = ("NchwcTransformer",)
REPORT_REPEATS = {"pair": 300, "all_items": 30}  # ~0.1 s on a 6,040 x 3,706 NeuMF: cheap enough for every compile
REPORT_WARMUP = 3
REPORT_BUDGET_S = 5.0  # per runner and query; at 528k items eager all-items takes ~1.5 s a call: 5 calls, not 30
REPORT_MIN_CALLS = 5


class OnnxRuntimeCompiler:
    """``compile.backend local``: one dynamic-batch ``model.onnx`` run by ONNX Runtime."""

    name = "local"

    def check(self, request: CompileRequest) -> None:
        if request.framework != "onnx":
            raise NcfError(
                f"compile.framework {request.framework} is a SageMaker Neo input; the local backend compiles ONNX",
                hint="set compile.framework onnx, or compile.backend sagemaker",
                settings=("compile.framework", "compile.backend"),
            )
        if not request.target.local_ok:
            raise NcfError(
                f"target {request.target.name} has a {request.target.accelerator} accelerator; "
                "the local backend builds for CPUs only",
                hint="set compile.backend sagemaker for GPU targets",
                settings=("compile.backend",),
            )

    def compile(self, request: CompileRequest, folder: Path, progress: Progress = NO_PROGRESS) -> CompileOutput:
        self.check(request)
        task = progress.task("local compile", total=4, status="export + preflight")

        def step(status: str) -> None:
            task.advance(status=status)

        model = request.model
        with tempfile.TemporaryDirectory(prefix="ncfctl-export-") as tmp:
            exported = export_checked(
                model,
                tmp,
                framework="onnx",
                num_users=request.num_users,
                num_items=request.num_items,
                batch_size=None,
                opset=request.opset,
                tolerance=request.tolerance,
                seed=request.seed,
            )
            step("optimise (ORT_ENABLE_ALL)")
            ort_session(
                exported.path,
                threads=request.threads,
                level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                optimized_path=folder / MODEL_FILE,
                disabled_optimizers=HARDWARE_SPECIFIC_PASSES,
            )
        step("parity")
        # the shipped graph exactly as written: no further rewrites at load time
        shipped = ort_session(
            folder / MODEL_FILE, threads=request.threads, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        pairs = [
            random_pairs(request.num_users, request.num_items, n, request.seed + 100 + k)
            for k, n in enumerate(DYNAMIC_PARITY_BATCHES)
        ]
        diff, checked = check_parity(torch_scorer(model), ort_scorer(shipped), pairs, request.tolerance, MODEL_FILE)
        step("speed vs PyTorch eager")
        with torch_threads(request.threads):
            timings = speed.compare(
                {"torch": torch_scorer(model), "onnxruntime": ort_scorer(shipped)},
                request.num_users,
                request.num_items,
                repeats=REPORT_REPEATS,
                warmup=REPORT_WARMUP,
                seed=request.seed,
                budget_s=REPORT_BUDGET_S,
                min_calls=REPORT_MIN_CALLS,
            )
        step("done")
        metrics = {
            "preflight_max_abs_diff": exported.max_abs_diff,
            "max_abs_diff": diff,
            "parity_pairs": checked,
        }
        for query in speed.QUERIES:
            metrics[f"{query}_p50_ms_torch"] = timings[query]["torch"].p50_ms
            metrics[f"{query}_p50_ms_onnxruntime"] = timings[query]["onnxruntime"].p50_ms
            metrics[f"{query}_speedup"] = speed.speedup(timings, query, "torch", "onnxruntime")
        shipped_ops = sorted({node.op_type for node in onnx.load(folder / MODEL_FILE).graph.node})
        return CompileOutput(
            runtime="onnxruntime",
            models=[{"batch_size": None, "path": MODEL_FILE}],
            threads=request.threads,
            metrics=metrics,
            info={
                "compiler": f"onnxruntime {ort.__version__}",
                "optimization": "ORT_ENABLE_ALL without " + ", ".join(HARDWARE_SPECIFIC_PASSES),
                "opset": request.opset,
                "exported_operators": exported.operators,
                "operators": shipped_ops,
            },
        )
