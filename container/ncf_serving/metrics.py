"""Request counters and latency histograms, rendered as Prometheus text at ``GET /metrics``.

Kept in-process and lock-protected (a handful of integers per request) so the server needs no
metrics library; the labels are the route, the request kind and the status code.
"""

from __future__ import annotations

import threading
from collections import defaultdict

# Upper bounds in seconds: sub-millisecond resolution where a top-K or a single pair lands.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sum: dict[tuple[str, str], float] = defaultdict(float)
        self._count: dict[tuple[str, str], int] = defaultdict(int)
        self.model_ready = 0

    def observe(self, path: str, kind: str, status: int, seconds: float) -> None:
        key = (path, kind)
        with self._lock:
            self._requests[(path, kind, status)] += 1
            self._sum[key] += seconds
            self._count[key] += 1
            buckets = self._buckets[key]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1

    def render(self) -> str:
        lines = [
            "# HELP ncf_model_ready 1 once the model is loaded and warm-up passed.",
            "# TYPE ncf_model_ready gauge",
            f"ncf_model_ready {self.model_ready}",
            "# HELP ncf_requests_total HTTP requests by path, kind and status.",
            "# TYPE ncf_requests_total counter",
        ]
        with self._lock:
            for (path, kind, status), count in sorted(self._requests.items()):
                lines.append(f'ncf_requests_total{{path="{path}",kind="{kind}",status="{status}"}} {count}')
            lines += [
                "# HELP ncf_request_seconds Request latency inside the server.",
                "# TYPE ncf_request_seconds histogram",
            ]
            for (path, kind), buckets in sorted(self._buckets.items()):
                labels = f'path="{path}",kind="{kind}"'
                for bound, count in zip(BUCKETS, buckets, strict=True):
                    lines.append(f'ncf_request_seconds_bucket{{{labels},le="{bound}"}} {count}')
                lines.append(f'ncf_request_seconds_bucket{{{labels},le="+Inf"}} {self._count[(path, kind)]}')
                lines.append(f"ncf_request_seconds_sum{{{labels}}} {self._sum[(path, kind)]:.6f}")
                lines.append(f"ncf_request_seconds_count{{{labels}}} {self._count[(path, kind)]}")
        return "\n".join(lines) + "\n"
