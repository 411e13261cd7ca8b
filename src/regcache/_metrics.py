"""Prometheus metrics: counters, gauges and histograms, rendered as text.

A deliberately small registry of our own (no runtime dependency) that renders
the Prometheus text exposition format, version 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/): ``# HELP``
and ``# TYPE`` lines, then one sample per line; label values escape ``\\``,
``"`` and newline, HELP text escapes ``\\`` and newline.

Recording is a dict update under a lock, cheap enough for every request:
the server records once per request (never per chunk), the upstream client
once per upstream request. Values kept elsewhere (the store's size, the
evictions count) are copied in when ``/metrics`` is scraped, by whoever owns
them.

The process has one registry, :data:`REGISTRY`, holding regcache's metrics
(the module-level constants below). Tests and embedders may build their own
:class:`MetricsRegistry`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Final, TypeVar

from regcache.core import LocalProtocolError

#: The Content-Type of a rendered registry.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram bucket bounds (seconds) for request durations: from a cache hit
#: answered in a few milliseconds to a large layer streamed for minutes.
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

#: Most label values one metric keeps. Label values come from a fixed set or
#: from configured (or admitted) registry names; the bound keeps a flood of
#: distinct values from growing memory and scrape size without limit.
MAX_SERIES: Final = 10_000

#: The label value recorded instead once a metric holds MAX_SERIES series.
OVERFLOW_LABEL: Final = "_overflow"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Labels = tuple[str, ...]


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text as the text format writes it."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, floats as Go writes them."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _label_text(names: Sequence[str], values: Labels, extra: str = "") -> str:
    parts = [
        f'{name}="{escape_label_value(value)}"' for name, value in zip(names, values, strict=True)
    ]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.match(name):
            raise LocalProtocolError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise LocalProtocolError(f"invalid label name {label!r} for metric {name}")
        if len(set(labelnames)) != len(labelnames):
            raise LocalProtocolError(f"metric {name} repeats a label name")
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._arity = len(self.labelnames)
        self._lock = threading.Lock()

    def _check(self, labels: Labels) -> None:
        if len(labels) != len(self.labelnames):
            raise LocalProtocolError(
                f"metric {self.name} takes labels {self.labelnames}, got {len(labels)} values"
            )

    def _series_key(self, labels: Labels, series_count: int) -> Labels:
        # Called under the lock for a label set not seen before.
        if series_count >= MAX_SERIES:
            return (OVERFLOW_LABEL,) * len(self.labelnames)
        return labels

    def header(self) -> list[str]:
        """The HELP and TYPE lines."""
        return [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        """The sample lines."""
        raise NotImplementedError


class _Value(_Metric):
    """A metric with one number per label set (counters and gauges)."""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[Labels, float] = {}
        if not self.labelnames:
            self._values[()] = 0

    def value(self, labels: Labels = ()) -> float:
        """The current value for ``labels`` (0 if never recorded)."""
        with self._lock:
            return self._values.get(labels, 0)

    def _add(self, labels: Labels, amount: float) -> None:
        if len(labels) != self._arity:
            self._check(labels)
        with self._lock:
            values = self._values
            if labels in values:
                values[labels] += amount
            else:
                key = self._series_key(labels, len(values))
                values[key] = values.get(key, 0) + amount

    def _set(self, labels: Labels, value: float) -> None:
        self._check(labels)
        with self._lock:
            values = self._values
            if labels not in values:
                labels = self._series_key(labels, len(values))
            values[labels] = value

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_label_text(self.labelnames, labels)} {format_value(value)}"
            for labels, value in items
        ]


class Counter(_Value):
    """A count that only goes up. Name it ``..._total``."""

    kind = "counter"

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        """Add ``amount`` (not negative) to the series ``labels``."""
        if amount < 0:
            raise LocalProtocolError(f"counter {self.name} cannot decrease")
        self._add(labels, amount)

    def set_total(self, value: float, labels: Labels = ()) -> None:
        """Copy in a total counted elsewhere (read when the registry is scraped)."""
        self._set(labels, value)


class Gauge(_Value):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, labels: Labels = ()) -> None:
        """Set the series ``labels`` to ``value``."""
        self._set(labels, value)

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        """Add ``amount`` (may be negative) to the series ``labels``."""
        self._add(labels, amount)


class _Series:
    __slots__ = ("buckets", "count", "total")

    def __init__(self, size: int) -> None:
        #: Observations per bucket, not cumulative; the last is +Inf.
        self.buckets = [0] * size
        self.count = 0
        self.total = 0.0


class Histogram(_Metric):
    """Observations counted into buckets by upper bound, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        if "le" in self.labelnames:
            raise LocalProtocolError(f"histogram {name} cannot have a label named 'le'")
        bounds = [float(bound) for bound in buckets]
        if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
            bounds.pop()  # +Inf is always there
        if not bounds:
            raise LocalProtocolError(f"histogram {name} needs at least one bucket")
        if any(math.isnan(bound) for bound in bounds) or any(
            a >= b for a, b in itertools.pairwise(bounds)
        ):
            raise LocalProtocolError(f"histogram {name}: buckets must be strictly increasing")
        self.buckets = tuple(bounds)
        self._series: dict[Labels, _Series] = {}
        if not self.labelnames:
            self._series[()] = _Series(len(self.buckets) + 1)

    def observe(self, value: float, labels: Labels = ()) -> None:
        """Count one observation of ``value`` for the series ``labels``."""
        if len(labels) != self._arity:
            self._check(labels)
        # bisect_left: a value equal to a bound belongs to that bound's bucket.
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                labels = self._series_key(labels, len(self._series))
                series = self._series.get(labels)
                if series is None:
                    series = self._series[labels] = _Series(len(self.buckets) + 1)
            series.buckets[index] += 1
            series.count += 1
            series.total += value

    def count(self, labels: Labels = ()) -> int:
        """How many observations the series ``labels`` holds."""
        with self._lock:
            series = self._series.get(labels)
            return 0 if series is None else series.count

    def sum(self, labels: Labels = ()) -> float:
        """The sum of the observations of the series ``labels``."""
        with self._lock:
            series = self._series.get(labels)
            return 0.0 if series is None else series.total

    def samples(self) -> list[str]:
        with self._lock:
            items = [
                (labels, list(series.buckets), series.count, series.total)
                for labels, series in sorted(self._series.items())
            ]
        bounds = [*(format_value(bound) for bound in self.buckets), "+Inf"]
        lines = []
        for labels, buckets, count, total in items:
            cumulative = 0
            for bound, observed in zip(bounds, buckets, strict=True):
                cumulative += observed
                le = f'le="{bound}"'
                lines.append(
                    f"{self.name}_bucket{_label_text(self.labelnames, labels, le)} {cumulative}"
                )
            label_text = _label_text(self.labelnames, labels)
            lines.append(f"{self.name}_sum{label_text} {format_value(total)}")
            lines.append(f"{self.name}_count{label_text} {count}")
        return lines


_M = TypeVar("_M", bound=_Metric)


class MetricsRegistry:
    """A set of metrics rendered together, in the order they were made."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _add(self, metric: _M) -> _M:
        with self._lock:
            if metric.name in self._metrics:
                raise LocalProtocolError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        """Make and register a counter."""
        return self._add(Counter(name, help_text, labelnames))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        """Make and register a gauge."""
        return self._add(Gauge(name, help_text, labelnames))

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> Histogram:
        """Make and register a histogram."""
        return self._add(Histogram(name, help_text, labelnames, buckets))

    def render(self) -> str:
        """Every metric in the text format (0.0.4), newline-terminated."""
        with self._lock:
            metrics = list(self._metrics.values())
        lines: list[str] = []
        for metric in metrics:
            lines += metric.header()
            lines += metric.samples()
        return "\n".join(lines) + "\n"


#: The process's registry: what ``/metrics`` serves.
REGISTRY: Final = MetricsRegistry()

#: Route kinds, the ``route`` label: what the router made of a request.
ROUTE_KINDS: Final = frozenset(
    {"ping", "manifest", "blob", "tags", "referrers", "catalog", "write", "other"}
)

#: Cache outcomes (``Reply.cache``) and where the bytes of each came from.
_BYTES_SOURCE: Final = {
    "hit": "cache",
    "stale": "cache",
    "revalidated": "cache",
    "miss": "upstream",
    "joined": "upstream",
    "upstream": "upstream",
}
CACHE_OUTCOMES: Final = frozenset(_BYTES_SOURCE)

REQUESTS: Final = REGISTRY.counter(
    "regcache_requests_total", "Requests answered, by route kind and status.", ("route", "status")
)
REQUEST_SECONDS: Final = REGISTRY.histogram(
    "regcache_request_seconds",
    "Time from a request's arrival to the last byte of its answer, by route kind.",
    ("route",),
)
CACHE_REQUESTS: Final = REGISTRY.counter(
    "regcache_cache_requests_total",
    "Manifest and blob answers by how the cache answered"
    " (hit, miss, joined, stale, revalidated, upstream).",
    ("outcome",),
)
BYTES_SERVED: Final = REGISTRY.counter(
    "regcache_bytes_served_total",
    "Body bytes sent to clients, by where they came from (cache or upstream).",
    ("source",),
)
UPSTREAM_REQUESTS: Final = REGISTRY.counter(
    "regcache_upstream_requests_total",
    "Requests to upstream registries, by registry and final status (error: no answer).",
    ("registry", "status"),
)
UPSTREAM_SECONDS: Final = REGISTRY.histogram(
    "regcache_upstream_request_seconds",
    "Time until an upstream registry's answer head, auth and redirects included.",
    ("registry",),
)
TOKEN_FETCHES: Final = REGISTRY.counter(
    "regcache_token_fetches_total",
    "Requests to upstream token endpoints, by registry.",
    ("registry",),
)
STORE_BYTES: Final = REGISTRY.gauge(
    "regcache_store_bytes", "Size of the blobs in the cache, in bytes."
)
EVICTIONS: Final = REGISTRY.counter(
    "regcache_evictions_total", "Blobs removed from the cache to make room."
)


def record_request(route: str, status: int, sent: int, cache: str, seconds: float) -> None:
    """Record one answered request (called once per request, after its last byte)."""
    REQUESTS.inc((route, str(status)))
    REQUEST_SECONDS.observe(seconds, (route,))
    source = _BYTES_SOURCE.get(cache)
    if source is not None:
        CACHE_REQUESTS.inc((cache,))
        if sent:
            BYTES_SERVED.inc((source,), sent)


def record_upstream(registry: str, status: str, seconds: float) -> None:
    """Record one upstream request: its registry, final status (or ``error``) and time."""
    UPSTREAM_REQUESTS.inc((registry, status))
    UPSTREAM_SECONDS.observe(seconds, (registry,))


def record_token_fetch(registry: str) -> None:
    """Record one request to a registry's token endpoint."""
    TOKEN_FETCHES.inc((registry,))


def update_store(store_bytes: int, evictions: int) -> None:
    """Copy in the store's values before a scrape."""
    STORE_BYTES.set(store_bytes)
    EVICTIONS.set_total(evictions)
