"""Run the app as SageMaker's ``serve``: a gunicorn master and N uvicorn workers on one port.

Before any worker exists, the master makes a private run folder (readiness markers and the
workers' Prometheus files, removed at exit), builds the app, imports the runtime library and reads
the ANN index if the bundle has one, so the workers fork with all of that shared. Each worker then
loads the bundle (its arrays are memory-mapped: one copy in the page cache for all workers) and
warms up; ``/ping`` turns 200 once every worker has (:mod:`ncf_serving.readiness`).

SIGTERM: the master stops accepting, each worker finishes its in-flight requests for at most
``NCF_GRACEFUL_SECONDS`` (default 10 s, well inside SageMaker's 30 s before SIGKILL), and the
process logs "server stopped" and exits 0. A bundle that cannot load: the worker records why and
exits with gunicorn's boot-error code, which stops the master; the process exits 1 and its last
log line gives the reason.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ncf_serving.bundle import BundleError, read_spec
from ncf_serving.logs import configure_logging
from ncf_serving.readiness import Readiness
from ncf_serving.runtimes import import_runtime_library
from ncf_serving.settings import Settings
from ncf_serving.workers import WORKER_BOOT_ERROR, Application, Master, options

log = logging.getLogger("ncf_serving")


def _preload(settings: Settings) -> None:
    """Load in the master what every worker would otherwise hold its own copy of.

    The runtime library: its Python-side state (~8 MB for onnxruntime). Only the import: sessions
    (and their thread pools) are created in the workers. Importing onnxruntime starts one idle
    native thread, which fork does not copy; workers create and run sessions without it (every
    server test, and 120 forks in a row when this was written). And the ANN index, if the bundle
    has one (:func:`ncf_serving.retrieval.read_shared_index`): reading it runs no OpenMP region, so
    the workers' FAISS starts its threads afresh.
    """
    try:
        spec = read_spec(settings.model_dir)
    except BundleError:
        return  # the workers fail to load it and report why
    import_runtime_library(spec.runtime)
    if spec.retrieval is not None:
        from ncf_serving.retrieval import read_shared_index  # faiss only for bundles that have an index

        read_shared_index(settings.model_dir, spec)


def run(settings: Settings) -> int:
    configure_logging()
    master_pid = os.getpid()
    run_dir = Path(tempfile.mkdtemp(prefix="ncf-serving-"))
    for folder in ("metrics", "ready"):
        (run_dir / folder).mkdir()
    # prometheus_client chooses multiprocess mode when first imported: set its folder before the app imports it
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    from ncf_serving.app import create_app
    from ncf_serving.metrics import Metrics

    readiness = Readiness(run_dir / "ready", settings.workers)
    metrics = Metrics(
        run_dir / "metrics",
        lambda: [
            ("ncf_model_ready", "1 once every worker has loaded the model and passed warm-up.", readiness.serving()),
            ("ncf_workers", "Worker processes the server runs.", settings.workers),
            ("ncf_workers_ready", "Workers whose model is loaded and warm now.", readiness.ready_workers()),
            ("ncf_worker_threads", "Runtime/BLAS threads per worker.", settings.threads),
        ],
    )

    def worker_failed(error: str) -> None:
        readiness.record_failure(error)
        os._exit(WORKER_BOOT_ERROR)  # from the loader thread: the master sees a worker that could not boot

    def worker_gone(_arbiter: Any, worker: Any) -> None:
        readiness.forget(worker.pid)
        log.info("worker exited", extra={"fields": {"worker_pid": worker.pid}})

    app = create_app(settings, readiness, metrics, on_fatal=worker_failed)
    _preload(settings)
    gc.freeze()  # what the master allocated so far is never collected: workers' GC passes leave those pages shared
    master = Master(Application(app, options(settings, worker_gone)))
    fields = {"workers": settings.workers, "threads": settings.threads, "port": settings.port}
    log.info("server starting", extra={"fields": fields})
    code: Any = 0
    try:
        master.run()  # ends in sys.exit, in the master and in every worker it forks
    except SystemExit as exc:
        if os.getpid() != master_pid:
            raise  # a worker leaving through the frames it was forked in: not the master's exit
        code = exc.code
    failure = readiness.failure()
    shutil.rmtree(run_dir, ignore_errors=True)
    failed = code not in (0, None)
    if failure is not None:  # restated by the master, so the log's last errors give the reason
        log.error("model failed to load", extra={"fields": {"model_dir": str(settings.model_dir), "error": failure}})
    fields = {"exit_code": int(failed), "signal": master.stop_signal}
    log.log(logging.ERROR if failed else logging.INFO, "server stopped", extra={"fields": fields})
    return 1 if failed else 0
