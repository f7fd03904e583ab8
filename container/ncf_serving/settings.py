"""Server settings from the environment (a container is configured by env, not flags).

==============================  ====================================================  ==============
Variable                        Meaning                                               Default
==============================  ====================================================  ==============
``NCF_MODEL_DIR``               the serving bundle (``SM_MODEL_DIR`` also honoured)   /opt/ml/model
``SAGEMAKER_BIND_TO_PORT``      port SageMaker asks for (wins over ``NCF_PORT``)      8080
``NCF_HOST``                    bind address                                          0.0.0.0
``NCF_MAX_BATCH``               most pairs in one ``instances`` request               10000
``NCF_MAX_TOP_K``               largest ``top_k``                                     1000
``NCF_MAX_BODY_BYTES``          largest request body (SageMaker's limit is 6 MB)      6291456
``NCF_WORKERS``                 worker processes (see below)                          one per vCPU
``NCF_THREADS``                 runtime/BLAS threads per worker                       see below
``NCF_WARMUP_ROUNDS``           warm-up inferences before ``/ping`` says ready        20
``NCF_GRACEFUL_SECONDS``        drain time for open requests after SIGTERM            10
``NCF_REQUEST_READ_SECONDS``    seconds to deliver a whole request (headers + body)   20
                                from connect or the last response; else closed
==============================  ====================================================  ==============

Without ``NCF_WORKERS``, SageMaker's own ``SAGEMAKER_MODEL_SERVER_WORKERS`` (what the SageMaker
SDK's ``model_server_workers`` sets) is honoured. Threads per worker default to ``serving.json``'s
``threads`` (what compile chose for the whole instance) capped at ``vCPUs // workers``, so
workers x threads never exceeds the vCPUs: with the default one worker per vCPU that is 1 thread
each, the best throughput for sub-millisecond requests.

The limits' defaults match the ``serving`` section of ncfctl's ``configs/default.yaml``; ncfctl
passes its configured values through these variables. Only the standard library is used here so
the serve entry can read settings before numpy and the runtimes are imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ncf_serving.layout import SERVING_JSON

DEFAULT_MODEL_DIR = "/opt/ml/model"


class SettingsError(Exception):
    """An environment variable holds a value the server cannot use."""


PORTS = (0, 65535)


def bounded_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    """``raw`` as an integer in ``[minimum, maximum]``; SettingsError naming ``name`` otherwise.

    The one validator for every number the server takes, from the environment or a flag (``--port``).
    """
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name}={value} must be between {minimum} and {maximum}")
    return value


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int = 2**31) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    return bounded_int(f"environment variable {name}", raw, minimum, maximum)


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    max_batch: int = 10000
    max_top_k: int = 1000
    max_body_bytes: int = 6 * 1024 * 1024
    workers: int | None = None
    threads: int | None = None
    warmup_rounds: int = 20
    graceful_seconds: int = 10
    request_read_seconds: int = 20

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls(model_dir=Path(DEFAULT_MODEL_DIR))
        port_variable = "SAGEMAKER_BIND_TO_PORT" if env.get("SAGEMAKER_BIND_TO_PORT") else "NCF_PORT"
        threads = _int(env, "NCF_THREADS", 0, 0, 256)
        workers_variable = "NCF_WORKERS" if env.get("NCF_WORKERS") else "SAGEMAKER_MODEL_SERVER_WORKERS"
        workers = _int(env, workers_variable, 0, 0, 1024)
        return cls(
            model_dir=Path(env.get("NCF_MODEL_DIR") or env.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR),
            host=env.get("NCF_HOST") or defaults.host,
            port=_int(env, port_variable, defaults.port, *PORTS),
            max_batch=_int(env, "NCF_MAX_BATCH", defaults.max_batch, 1),
            max_top_k=_int(env, "NCF_MAX_TOP_K", defaults.max_top_k, 1),
            max_body_bytes=_int(env, "NCF_MAX_BODY_BYTES", defaults.max_body_bytes, 1),
            workers=workers or None,
            threads=threads or None,
            warmup_rounds=_int(env, "NCF_WARMUP_ROUNDS", defaults.warmup_rounds, 1, 10**7),
            graceful_seconds=_int(env, "NCF_GRACEFUL_SECONDS", defaults.graceful_seconds, 0, 25),
            request_read_seconds=_int(env, "NCF_REQUEST_READ_SECONDS", defaults.request_read_seconds, 1, 3600),
        )


def available_cpus() -> int:
    """vCPUs this process may run on (its affinity mask, which container CPU sets narrow)."""
    return len(os.sched_getaffinity(0))


def process_plan(settings: Settings, cpus: int) -> tuple[int, int]:
    """(workers, threads per worker) for ``cpus`` vCPUs: explicit settings win, else one worker per
    vCPU and the bundle's threads capped so that workers x threads <= vCPUs."""
    workers = settings.workers or cpus
    threads = settings.threads or min(bundle_threads(settings.model_dir), max(1, cpus // workers))
    return workers, threads


def bundle_threads(model_dir: Path) -> int:
    """The ``threads`` the bundle asks for (1 when unreadable: loading reports the real problem)."""
    try:
        threads = json.loads((model_dir / SERVING_JSON).read_text(encoding="utf-8")).get("threads", 1)
    except (OSError, ValueError, AttributeError):
        return 1
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and 0 < threads <= 256 else 1
