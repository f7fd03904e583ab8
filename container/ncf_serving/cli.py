"""The command line: ``python -m ncf_serving serve`` / the image's ``serve``, and ``disable-dlr-phone-home``.

The worker count and threads per worker are fixed here (:func:`ncf_serving.settings.process_plan`),
before numpy and the runtimes are imported, because BLAS and OpenMP read their thread counts once
at import and the workers inherit the master's environment. Variables already set by the
operator win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from ncf_serving.settings import PORTS, Settings, SettingsError, available_cpus, bounded_int, process_plan

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS")


def serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        if args.port is not None:
            settings = replace(settings, port=bounded_int("--port", args.port, *PORTS))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.model_dir:
        settings = replace(settings, model_dir=Path(args.model_dir))
    if args.host:
        settings = replace(settings, host=args.host)
    workers, threads = process_plan(settings, available_cpus())
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(threads))
    from ncf_serving.server import run

    return run(replace(settings, workers=workers, threads=threads))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ncf_serving", description="NCF recommender inference server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve /ping and /invocations (SageMaker contract)")
    serve_parser.add_argument("--model-dir", help="serving bundle folder (default: NCF_MODEL_DIR or /opt/ml/model)")
    serve_parser.add_argument("--port", help="port 0-65535 (default: SAGEMAKER_BIND_TO_PORT, NCF_PORT or 8080)")
    serve_parser.add_argument("--host", help="bind address (default: NCF_HOST or 0.0.0.0)")
    commands.add_parser("disable-dlr-phone-home", help="write DLR's ccm_config.json (run at image build time)")
    args = parser.parse_args(argv)
    if args.command == "disable-dlr-phone-home":
        from ncf_serving.dlr_phone_home import disable_dlr_phone_home

        print(json.dumps({"dlr_config": str(disable_dlr_phone_home()), "enable_phone_home": False}))
        return 0
    return serve(args)
