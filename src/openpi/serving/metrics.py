"""Server metrics (request count, errors, latency, batch sizes) rendered in the Prometheus text format."""

from __future__ import annotations

import bisect
import collections
from collections.abc import Sequence
import dataclasses

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclasses.dataclass
class Histogram:
    """A cumulative Prometheus histogram over fixed upper bounds."""

    bounds: Sequence[float]
    counts: list[int] = dataclasses.field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines += [
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.total:.9g}",
            f"{name}_count {self.count}",
        ]
        return lines


@dataclasses.dataclass
class ServerMetrics:
    """Counters of one policy server; updated from its event loop only, so no locking is needed."""

    requests: int = 0
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    open_connections: int = 0
    latency_s: Histogram = dataclasses.field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    batch_size: Histogram = dataclasses.field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))

    def render(self) -> str:
        """The metrics as a Prometheus text exposition (version 0.0.4)."""
        lines = [
            "# HELP openpi_requests_total Inference requests received.",
            "# TYPE openpi_requests_total counter",
            f"openpi_requests_total {self.requests}",
            "# HELP openpi_request_errors_total Requests answered with an error, by kind.",
            "# TYPE openpi_request_errors_total counter",
        ]
        lines += [
            f'openpi_request_errors_total{{kind="{kind}"}} {count}' for kind, count in sorted(self.errors.items())
        ]
        lines += [
            "# HELP openpi_open_connections Client connections currently open.",
            "# TYPE openpi_open_connections gauge",
            f"openpi_open_connections {self.open_connections}",
        ]
        lines += self.latency_s.render(
            "openpi_request_latency_seconds", "Time from a request's arrival to its reply being sent."
        )
        lines += self.batch_size.render("openpi_batch_size", "Observations per policy call.")
        return "\n".join(lines) + "\n"
