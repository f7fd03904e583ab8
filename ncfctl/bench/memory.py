"""Peak memory of a process that serves only one model: measured in a child process, never estimated.

Two measurements, both the kernel's own peak resident set size:

* :func:`probe_peak_rss_mb` starts ``python -m ncfctl.bench.probe`` for a torch model or a serving
  bundle, which loads it, answers every benchmark query a few times and reports its ``ru_maxrss``;
* :func:`process_peak_rss_mb` reads ``VmHWM`` of an already running server (a local deployment),
  i.e. its peak since it started, including its warm-up and the benchmark's requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ncf_serving.cli import THREAD_VARIABLES

from ncfctl.errors import NcfError

PROBE_MODULE = "ncfctl.bench.probe"
PROBE_TIMEOUT_S = 300


def probe_peak_rss_mb(spec: dict[str, Any], timeout: float = PROBE_TIMEOUT_S) -> float:
    """Run the probe on ``spec`` (see :mod:`ncfctl.bench.probe`) and return its peak RSS in MiB."""
    threads = str(spec["threads"])  # BLAS/OpenMP read these once at import, as in the server's own entry point
    env = {**os.environ, **{variable: threads for variable in THREAD_VARIABLES}}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", PROBE_MODULE, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise NcfError(f"memory probe for {spec.get('model') or spec.get('bundle')} ran over {timeout:g} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise NcfError(f"memory probe for {spec.get('model') or spec.get('bundle')} failed: {last}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def probe_many_peak_rss_mb(specs: list[dict[str, Any]]) -> list[float]:
    """:func:`probe_peak_rss_mb` for each spec, up to one probe per CPU at a time.

    Peak RSS is a per-process number, so probes running side by side do not change each other's
    result; running them together only saves wall time (most of it is importing the runtime).
    """
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return list(pool.map(probe_peak_rss_mb, specs))


def process_peak_rss_mb(pid: int) -> float | None:
    """``VmHWM`` (peak RSS) of a running process in MiB, or None if it is gone or not readable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # the kernel reports kB
    return None
