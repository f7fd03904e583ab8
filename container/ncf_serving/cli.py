"""The command line: ``python -m ncf_serving serve`` / the image's ``serve``, and ``disable-dlr-phone-home``.

Thread counts are fixed here, before numpy and the runtimes are imported, because BLAS and
OpenMP read them once at import: ``NCF_THREADS`` or the bundle's ``serving.json`` ``threads``
(default 1, the right choice for one request at a time on SageMaker's small CPU instances).
Variables already set by the operator win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from ncf_serving.settings import PORTS, Settings, SettingsError, bounded_int, bundle_threads

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
    threads = settings.threads or bundle_threads(settings.model_dir)
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, str(threads))
    from ncf_serving.server import run

    return run(replace(settings, threads=threads))


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
