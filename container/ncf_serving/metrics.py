"""Request counters and latency histograms across all workers, as Prometheus text at ``GET /metrics``.

Each worker is its own process, so counts kept in a worker's memory would describe only the worker
that happened to accept the scrape. ``prometheus_client``'s multiprocess mode keeps every worker's
values in its own small memory-mapped file in ``PROMETHEUS_MULTIPROC_DIR`` (an increment is a
write into that mapping, a few microseconds), and a scrape merges the files of all workers, the
dead ones' included, so counters never go backwards when a worker is replaced.

The variable must be set before ``prometheus_client`` is first imported (it picks its value class
at import): :func:`ncf_serving.server.run` does so. Server-wide gauges (ready, workers, threads)
are not per-process values: they are computed at scrape time by ``gauges``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

# Upper bounds in seconds: sub-millisecond resolution where a top-K or a single pair lands.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Gauge = tuple[str, str, float]  # name, help, value


class _ServerGauges:
    """A collector of gauges computed when scraped."""

    def __init__(self, gauges: Callable[[], list[Gauge]]):
        self.gauges = gauges

    def collect(self):
        for name, text, value in self.gauges():
            yield GaugeMetricFamily(name, text, value=value)


class Metrics:
    def __init__(self, folder: Path, gauges: Callable[[], list[Gauge]]):
        self.folder = folder
        self._requests = Counter(
            "ncf_requests", "HTTP requests by path, kind and status.", ("path", "kind", "status"), registry=None
        )
        self._latency = Histogram(
            "ncf_request_seconds", "Request latency in the server.", ("path", "kind"), registry=None, buckets=BUCKETS
        )
        self._gauges = _ServerGauges(gauges)
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, path: str, kind: str, status: int, seconds: float) -> None:
        # A few dozen label combinations exist; looking each one's series up once saves ~4 µs a request.
        series = self._series.get((path, kind, status))
        if series is None:
            series = self._requests.labels(path, kind, str(status)), self._latency.labels(path, kind)
            self._series[path, kind, status] = series
        requests, latency = series
        requests.inc()
        latency.observe(seconds)

    def render(self) -> str:
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=str(self.folder))
        registry.register(self._gauges)
        return generate_latest(registry).decode("utf-8")
