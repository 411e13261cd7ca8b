"""Metrics, health endpoints and structured logs.

The text format is checked by the reference parser (``prometheus_client``),
never by our own reading of it: a rendering bug the parser would trip on
fails here.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from regcache import Mirror, _metrics
from regcache._metrics import (
    CONTENT_TYPE,
    Counter,
    Histogram,
    MetricsRegistry,
    escape_help,
    escape_label_value,
    format_value,
)
from regcache.config import load_config
from regcache.core import Credentials, LocalProtocolError, Scope, TokenCache, hash_password
from regcache.engine._http import HttpClient, UpstreamConnectError, UpstreamResponse
from regcache.engine._registry import RegistryClient, TokenFlights
from regcache.proxy._main import JsonFormatter, parse_args
from regcache.proxy._mirror import MirrorApp
from regcache.proxy._server import FileBody, Reply, Request, _loggable_target, serve_http

TEST_DEADLINE = 10.0


def families(text: str) -> dict[str, Any]:
    """The parsed families of a rendering, by family name."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name{labels}`` in a rendering (0 if absent)."""
    found = [s.value for s in samples(text) if s.name == name and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


# --- rendering ---------------------------------------------------------------------------


def test_a_registry_renders_help_type_and_samples_the_parser_reads() -> None:
    registry = MetricsRegistry()
    requests = registry.counter("app_requests_total", "Requests.", ("route", "status"))
    size = registry.gauge("app_size_bytes", "Size.")
    requests.inc(("blob", "200"))
    requests.inc(("blob", "200"), 2)
    requests.inc(("manifest", "404"))
    size.set(1234)

    text = registry.render()

    assert text.endswith("\n")
    assert "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n" in text
    assert "# TYPE app_size_bytes gauge\n" in text
    parsed = families(text)
    assert parsed["app_requests"].type == "counter"
    assert parsed["app_requests"].documentation == "Requests."
    assert parsed["app_size_bytes"].type == "gauge"
    assert sample_value(text, "app_requests_total", route="blob", status="200") == 3
    assert sample_value(text, "app_requests_total", route="manifest", status="404") == 1
    assert sample_value(text, "app_size_bytes") == 1234
    assert 'app_requests_total{route="blob",status="200"} 3\n' in text


def test_an_unlabelled_metric_starts_at_zero_and_a_labelled_one_empty() -> None:
    registry = MetricsRegistry()
    registry.counter("a_total", "A.")
    registry.counter("b_total", "B.", ("kind",))
    text = registry.render()
    assert "a_total 0\n" in text
    assert [s.name for s in samples(text)] == ["a_total"]
    assert set(families(text)) == {"a", "b"}


def test_metrics_render_in_registration_order_and_series_sorted() -> None:
    registry = MetricsRegistry()
    second = registry.counter("z_total", "Z.", ("k",))
    registry.counter("a_total", "A.")
    second.inc(("b",))
    second.inc(("a",))
    names = [
        line.split()[2] for line in registry.render().splitlines() if line.startswith("# TYPE")
    ]
    assert names == ["z_total", "a_total"]
    assert [s.labels["k"] for s in samples(registry.render()) if s.name == "z_total"] == ["a", "b"]


def test_label_values_and_help_are_escaped() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("odd_total", 'Back\\slash and\nnewline "quoted".', ("value",))
    nasty = 'a\\b"c\nd}e,f="g'
    counter.inc((nasty,))
    text = registry.render()
    assert 'odd_total{value="a\\\\b\\"c\\nd}e,f=\\"g"} 1\n' in text
    assert '# HELP odd_total Back\\\\slash and\\nnewline "quoted".\n' in text
    parsed = families(text)
    assert parsed["odd"].documentation == 'Back\\slash and\nnewline "quoted".'
    assert parsed["odd"].samples[0].labels == {"value": nasty}
    assert len(text.splitlines()) == 3


def test_escaping_functions() -> None:
    assert escape_label_value('\\"\n') == '\\\\\\"\\n'
    assert escape_help('\\"\n') == '\\\\"\\n'


# The parser strips the ends of HELP text (ours has no white space there).
_help_texts = st.text().map(str.strip)


@given(st.text(), _help_texts)
def test_any_label_value_and_help_round_trip_through_the_parser(value: str, help_text: str) -> None:
    registry = MetricsRegistry()
    registry.counter("rt_total", help_text, ("value",)).inc((value,), 5)
    registry.histogram("rt_seconds", help_text, ("value",), (1.0,)).observe(0.5, (value,))
    parsed = families(registry.render())
    assert parsed["rt"].documentation == help_text
    assert parsed["rt"].samples[0].labels == {"value": value}
    assert parsed["rt"].samples[0].value == 5
    assert {s.labels["value"] for s in parsed["rt_seconds"].samples} == {value}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (42, "42"),
        (2.0, "2"),
        (0.25, "0.25"),
        (1e20, "1e+20"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_sample_values_are_formatted_as_the_format_wants(value: float, text: str) -> None:
    assert format_value(value) == text


# --- histograms --------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    registry = MetricsRegistry()
    histogram = registry.histogram("op_seconds", "Op.", ("route",), (0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0, 100.0):
        histogram.observe(value, ("blob",))
    text = registry.render()

    family = families(text)["op_seconds"]
    assert family.type == "histogram"
    buckets = {
        s.labels["le"]: s.value
        for s in family.samples
        if s.name == "op_seconds_bucket" and s.labels["route"] == "blob"
    }
    # A value equal to a bound is counted in that bound's bucket (le = less or equal).
    assert buckets == {"0.1": 2, "1": 4, "10": 5, "+Inf": 6}
    assert sample_value(text, "op_seconds_count", route="blob") == 6
    assert sample_value(text, "op_seconds_sum", route="blob") == pytest.approx(104.65)
    assert histogram.count(("blob",)) == 6
    assert histogram.sum(("blob",)) == pytest.approx(104.65)
    assert histogram.count(("other",)) == 0


def test_histogram_without_labels_renders_empty_buckets() -> None:
    registry = MetricsRegistry()
    registry.histogram("idle_seconds", "Idle.", (), (1.0, float("inf")))
    text = registry.render()
    assert sample_value(text, "idle_seconds_bucket", le="1.0") == 0
    assert sample_value(text, "idle_seconds_bucket", le="+Inf") == 0
    assert sample_value(text, "idle_seconds_count") == 0


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=50))
def test_histogram_counts_every_observation_once(values: list[float]) -> None:
    registry = MetricsRegistry()
    histogram = registry.histogram("h_seconds", "H.", (), _metrics.DURATION_BUCKETS)
    for value in values:
        histogram.observe(value)
    text = registry.render()
    bucket_values = [s.value for s in samples(text) if s.name == "h_seconds_bucket"]
    assert bucket_values == sorted(bucket_values)
    assert bucket_values[-1] == len(values)
    for bound, count in zip(_metrics.DURATION_BUCKETS, bucket_values, strict=False):
        assert count == sum(1 for value in values if value <= bound)


# --- misuse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("1bad", ()),
        ("has-dash", ()),
        ("", ()),
        ("ok_total", ("bad-label",)),
        ("ok_total", ("__reserved",)),
        ("ok_total", ("same", "same")),
    ],
)
def test_invalid_names_are_refused(name: str, labels: tuple[str, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        MetricsRegistry().counter(name, "x", labels)


def test_misuse_raises_our_error() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c_total", "C.", ("a",))
    with pytest.raises(LocalProtocolError):
        registry.counter("c_total", "again")
    with pytest.raises(LocalProtocolError):
        counter.inc(("x", "y"))
    with pytest.raises(LocalProtocolError):
        counter.inc(("x",), -1)
    with pytest.raises(LocalProtocolError):
        registry.histogram("h1", "H.", (), (2.0, 1.0))
    with pytest.raises(LocalProtocolError):
        registry.histogram("h2", "H.", (), ())
    with pytest.raises(LocalProtocolError):
        registry.histogram("h3", "H.", ("le",))
    with pytest.raises(LocalProtocolError):
        registry.histogram("h4", "H.", (), (1.0, math.nan))


def test_series_beyond_the_limit_are_folded_into_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_metrics, "MAX_SERIES", 3)
    counter = Counter("many_total", "M.", ("registry",))
    histogram = Histogram("many_seconds", "M.", ("registry",), (1.0,))
    for index in range(10):
        counter.inc((f"r{index}",))
        histogram.observe(0.5, (f"r{index}",))
    assert counter.value(("r0",)) == 1
    assert counter.value(("r5",)) == 0
    assert counter.value((_metrics.OVERFLOW_LABEL,)) == 7
    assert histogram.count((_metrics.OVERFLOW_LABEL,)) == 7
    counter.inc(("r1",))  # known series keep counting
    assert counter.value(("r1",)) == 2


# --- what the server records ------------------------------------------------------------


def _snapshot() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in samples(_metrics.REGISTRY.render())
    }


def _delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    key = (name, tuple(sorted(labels.items())))
    return _snapshot().get(key, 0.0) - before.get(key, 0.0)


def test_record_request_counts_route_status_outcome_bytes_and_time() -> None:
    before = _snapshot()
    _metrics.record_request("blob", 200, 1000, "hit", 0.002)
    _metrics.record_request("blob", 200, 500, "miss", 0.3)
    _metrics.record_request("blob", 200, 200, "joined", 0.3)
    _metrics.record_request("manifest", 200, 70, "stale", 0.01)
    _metrics.record_request("manifest", 200, 0, "revalidated", 0.01)
    _metrics.record_request("tags", 200, 30, "upstream", 0.1)
    _metrics.record_request("ping", 200, 2, "-", 0.001)
    _metrics.record_request("blob", 404, 90, "-", 0.001)

    assert _delta(before, "regcache_requests_total", route="blob", status="200") == 3
    assert _delta(before, "regcache_requests_total", route="blob", status="404") == 1
    assert _delta(before, "regcache_requests_total", route="ping", status="200") == 1
    for outcome in ("hit", "miss", "joined", "stale", "revalidated", "upstream"):
        assert _delta(before, "regcache_cache_requests_total", outcome=outcome) == 1
    assert _delta(before, "regcache_cache_requests_total", outcome="-") == 0
    # Cache answers (hit, stale, revalidated) vs. fetched ones (miss, joined, upstream);
    # answers without a cache outcome (pings, errors) are neither.
    assert _delta(before, "regcache_bytes_served_total", source="cache") == 1070
    assert _delta(before, "regcache_bytes_served_total", source="upstream") == 730
    assert _delta(before, "regcache_request_seconds_count", route="blob") == 4
    assert _delta(before, "regcache_request_seconds_bucket", route="blob", le="0.005") == 2


@asynccontextmanager
async def served(reply: Reply) -> AsyncIterator[trio.abc.Stream]:
    """serve_http answering every request with ``reply``, over an in-memory stream."""

    async def handler(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        return reply

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_http(server, handler, client="192.0.2.7"))
        yield client
        nursery.cancel_scope.cancel()


async def roundtrip(client: trio.abc.Stream, target: str, method: str = "GET") -> bytes:
    await client.send_all(
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c2VjcmV0\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    received = b""
    while chunk := await client.receive_some():
        received += chunk
    return received


async def test_serve_http_records_each_request_and_logs_structured_fields(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 4096)
    reply = Reply(
        200, (), FileBody(str(blob), 0, 4096), registry="docker.io", cache="hit", route="blob"
    )
    before = _snapshot()
    caplog.set_level(logging.INFO, logger="regcache.access")
    with trio.fail_after(TEST_DEADLINE):
        async with served(reply) as client:
            answer = await roundtrip(client, "/v2/library/alpine/blobs/sha256:ab?ns=docker.io")
    assert answer.endswith(b"x" * 4096)
    assert _delta(before, "regcache_requests_total", route="blob", status="200") == 1
    assert _delta(before, "regcache_cache_requests_total", outcome="hit") == 1
    assert _delta(before, "regcache_bytes_served_total", source="cache") == 4096
    assert _delta(before, "regcache_request_seconds_count", route="blob") == 1

    [record] = [r for r in caplog.records if r.name == "regcache.access"]
    fields = record.access  # type: ignore[attr-defined]
    assert fields["client"] == "192.0.2.7"
    assert fields["method"] == "GET"
    assert fields["target"] == "/v2/library/alpine/blobs/sha256:ab?ns=docker.io"
    assert fields["registry"] == "docker.io"
    assert fields["status"] == 200
    assert fields["bytes"] == 4096
    assert fields["cache"] == "hit"
    assert isinstance(fields["ms"], float)
    # The text line is as before: client method target registry status bytes cache time.
    assert record.getMessage().startswith(
        "192.0.2.7 GET /v2/library/alpine/blobs/sha256:ab?ns=docker.io docker.io 200 4096 hit "
    )
    assert "c2VjcmV0" not in record.getMessage()
    assert "c2VjcmV0" not in json.dumps(fields)


async def test_a_head_answer_counts_no_bytes() -> None:
    reply = Reply(200, (), b"", cache="miss", content_length=10_000, route="blob")
    before = _snapshot()
    with trio.fail_after(TEST_DEADLINE):
        async with served(reply) as client:
            await roundtrip(client, "/v2/a/blobs/sha256:ab", method="HEAD")
    assert _delta(before, "regcache_cache_requests_total", outcome="miss") == 1
    assert _delta(before, "regcache_bytes_served_total", source="upstream") == 0


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/v2/a/manifests/latest?ns=docker.io", "/v2/a/manifests/latest?ns=docker.io"),
        ("http://user:secret@registry.test/v2/", "http://registry.test/v2/"),
        ("http://user:p@ss@registry.test:5000/v2/x", "http://registry.test:5000/v2/x"),
        ("http://registry.test/v2/x@y", "http://registry.test/v2/x@y"),
        ("/" + "a" * 1000, "/" + "a" * 299),
    ],
)
def test_logged_targets_carry_no_userinfo(target: str, logged: str) -> None:
    assert _loggable_target(target) == logged


# --- upstream requests -------------------------------------------------------------------


class ScriptedHttp:
    """Answers upstream requests from a table keyed by URL without query; records them."""

    def __init__(self, answers: dict[str, list[UpstreamResponse | Exception]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]]
    ) -> UpstreamResponse:
        await trio.lowlevel.checkpoint()
        self.asked.append(url)
        answer = self.answers[url.split("?")[0]].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


CHALLENGE = 'Bearer realm="https://auth.test/token",service="reg.test",scope="repository:app:pull"'
TOKEN_BODY = b'{"token":"tok","expires_in":300}'


def registry_client(name: str, http: ScriptedHttp) -> RegistryClient:
    return RegistryClient(
        name,
        ["https://reg.test"],
        http=cast(HttpClient, http),
        credentials=Credentials("user", "pw"),
        principal="user",
        tokens=TokenCache(),
        token_flights=TokenFlights(),
    )


async def test_upstream_requests_and_token_fetches_are_counted() -> None:
    url = "https://reg.test/v2/app/manifests/latest"
    http = ScriptedHttp(
        {
            url: [
                UpstreamResponse.from_bytes(401, [("WWW-Authenticate", CHALLENGE)]),
                UpstreamResponse.from_bytes(200, [("Content-Length", "2")], b"{}"),
                UpstreamResponse.from_bytes(404, [("Content-Length", "0")]),
            ],
        }
    )
    token_url = "https://auth.test/token"
    http.answers[token_url] = [
        UpstreamResponse.from_bytes(200, [("Content-Length", str(len(TOKEN_BODY)))], TOKEN_BODY)
    ]
    client = registry_client("metrics-reg.test", http)
    before = _snapshot()
    with trio.fail_after(TEST_DEADLINE):
        first = await client.request("GET", "/v2/app/manifests/latest", scopes=[Scope.pull("app")])
        await first.aclose()
        second = await client.request("GET", "/v2/app/manifests/latest", scopes=[Scope.pull("app")])
        await second.aclose()
    assert [first.status, second.status] == [200, 404]
    assert [url.split("?")[0] for url in http.asked] == [url, token_url, url, url]
    # One count per request(), by its final status, auth rounds included.
    registry = "metrics-reg.test"
    assert _delta(before, "regcache_upstream_requests_total", registry=registry, status="200") == 1
    assert _delta(before, "regcache_upstream_requests_total", registry=registry, status="404") == 1
    assert _delta(before, "regcache_upstream_requests_total", registry=registry, status="401") == 0
    assert _delta(before, "regcache_upstream_request_seconds_count", registry=registry) == 2
    assert _delta(before, "regcache_token_fetches_total", registry=registry) == 1


async def test_an_unreachable_upstream_counts_as_error() -> None:
    url = "https://reg.test/v2/app/blobs/sha256:ab"
    failure = UpstreamConnectError("connection refused")
    http = ScriptedHttp({url: [failure, failure]})
    client = registry_client("metrics-down.test", http)
    before = _snapshot()
    with trio.fail_after(TEST_DEADLINE), pytest.raises(UpstreamConnectError):
        await client.request("HEAD", "/v2/app/blobs/sha256:ab", scopes=[Scope.pull("app")])
    registry = "metrics-down.test"
    assert (
        _delta(before, "regcache_upstream_requests_total", registry=registry, status="error") == 1
    )
    assert _delta(before, "regcache_upstream_request_seconds_count", registry=registry) == 1


# --- /metrics, /healthz, /readyz -----------------------------------------------------------

PASSWORD = "scrape-password"


def mirror_config(tmp_path: Path, *, users: bool = False) -> str:
    lines = [f'data_dir = "{tmp_path / "data"}"', "[mirror]"]
    if users:
        encoded = hash_password(PASSWORD, salt=b"0123456789abcdef", iterations=1000)
        lines += ["[mirror.users]", f'prometheus = "{encoded}"']
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def running_mirror(tmp_path: Path, *, users: bool = False) -> AsyncIterator[Mirror]:
    config = load_config(mirror_config(tmp_path, users=users), {})
    async with Mirror(config) as mirror:
        yield mirror


def get(target: str, method: str = "GET", authorization: str | None = None) -> Request:
    headers = (("authorization", authorization),) if authorization else ()
    return Request(method, target, headers, client="127.0.0.1")


async def test_healthz_and_readyz_answer_ok(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with running_mirror(tmp_path) as mirror:
            health = await mirror.handle(get("/healthz"))
            ready = await mirror.handle(get("/readyz"))
    assert (health.status, health.body) == (200, b"ok")
    assert (ready.status, ready.body) == (200, b"ok")
    assert ("Content-Type", "text/plain; charset=utf-8") in health.headers
    # The probe leaves nothing behind in the store.
    assert os.listdir(tmp_path / "data" / "store" / "tmp") == []


async def test_readyz_answers_503_with_the_reason_when_the_store_is_not_writable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with running_mirror(tmp_path) as mirror:
            tmp_dir = tmp_path / "data" / "store" / "tmp"
            tmp_dir.rmdir()
            tmp_dir.write_text("not a directory")  # fails even for root, unlike chmod
            ready = await mirror.handle(get("/readyz"))
            health = await mirror.handle(get("/healthz"))
            tmp_dir.unlink()
            tmp_dir.mkdir()
            again = await mirror.handle(get("/readyz"))
    assert ready.status == 503
    assert isinstance(ready.body, bytes)
    assert ready.body.startswith(b"not ready: the store is not writable: ")
    assert b"Not a directory" in ready.body
    assert str(tmp_path).encode() not in ready.body  # paths go to the log, not to anyone
    assert str(tmp_dir) in caplog.text
    assert health.status == 200
    assert again.status == 200


async def test_metrics_are_served_in_the_text_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with running_mirror(tmp_path) as mirror:
            # A class property wins over an attribute or property of the engine's own.
            monkeypatch.setattr(
                type(mirror.engine), "evictions", property(lambda _engine: 3), raising=False
            )
            answer = await mirror.handle(get("/metrics"))
            head = await mirror.handle(get("/metrics", method="HEAD"))
            post = await mirror.handle(get("/metrics", method="POST"))
    assert answer.status == 200
    assert ("Content-Type", CONTENT_TYPE) in answer.headers
    assert isinstance(answer.body, bytes)
    text = answer.body.decode()
    parsed = families(text)
    for name in (
        "regcache_requests",
        "regcache_cache_requests",
        "regcache_bytes_served",
        "regcache_upstream_requests",
        "regcache_upstream_request_seconds",
        "regcache_token_fetches",
        "regcache_store_bytes",
        "regcache_evictions",
        "regcache_request_seconds",
    ):
        assert name in parsed, name
        assert parsed[name].documentation
    assert all(name.startswith("regcache_") for name in parsed)
    assert parsed["regcache_store_bytes"].type == "gauge"
    assert parsed["regcache_evictions"].type == "counter"
    assert parsed["regcache_request_seconds"].type == "histogram"
    assert sample_value(text, "regcache_store_bytes") == 0
    assert sample_value(text, "regcache_evictions_total") == 3
    assert head.status == 200
    assert head.body == b""
    assert head.length == len(answer.body)
    assert post.status == 405


async def test_metrics_need_the_mirror_users_and_health_does_not(tmp_path: Path) -> None:
    good = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
    with trio.fail_after(TEST_DEADLINE):
        async with running_mirror(tmp_path, users=True) as mirror:
            anonymous = await mirror.handle(get("/metrics"))
            wrong = await mirror.handle(get("/metrics", authorization=bad))
            scraped = await mirror.handle(get("/metrics", authorization=good))
            health = await mirror.handle(get("/healthz"))
            ready = await mirror.handle(get("/readyz"))
            registry_api = await mirror.handle(get("/v2/"))
    assert anonymous.status == 401
    assert ("WWW-Authenticate", 'Basic realm="regcache"') in anonymous.headers
    assert anonymous.route == "other"
    assert wrong.status == 401
    assert scraped.status == 200
    assert health.status == 200
    assert ready.status == 200
    assert registry_api.status == 401
    assert registry_api.route == "ping"


async def test_replies_carry_their_route_kind(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with running_mirror(tmp_path) as mirror:
            ping = await mirror.handle(get("/v2/"))
            catalog = await mirror.handle(get("/v2/_catalog"))
            write = await mirror.handle(get("/v2/library/alpine/manifests/latest", "PUT"))
            bad = await mirror.handle(get("/v2/Upper/manifests/latest"))
            nowhere = await mirror.handle(get("/nowhere"))
    assert (ping.status, ping.route) == (200, "ping")
    assert (catalog.status, catalog.route) == (200, "catalog")
    assert (write.status, write.route) == (405, "write")
    assert (bad.status, bad.route) == (400, "other")
    assert (nowhere.status, nowhere.route) == (404, "other")


async def test_inside_a_tunnel_the_operations_paths_are_not_served(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with running_mirror(tmp_path) as mirror:
            app = MirrorApp(mirror.engine, client_credentials=True)
            request = Request("GET", "/metrics", (), client="127.0.0.1", host="ghcr.io:443")
            answer = await app.handle(request)
    assert answer.status != 200
    assert isinstance(answer.body, bytes)
    assert b"regcache_requests_total" not in answer.body


# --- JSON logs ------------------------------------------------------------------------------


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("regcache.test").makeRecord(
        "regcache.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )
    record.created = 1_795_824_000.25
    return record


def test_json_formatter_writes_one_object_per_line() -> None:
    line = JsonFormatter().format(_record("two\nlines: %s", "x"))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-11-28T00:00:00.250Z",
        "level": "WARNING",
        "logger": "regcache.test",
        "message": "two\nlines: x",
    }


def test_json_formatter_adds_the_access_fields() -> None:
    access = {
        "client": "10.0.0.1",
        "method": "GET",
        "target": "/v2/",
        "registry": "-",
        "status": 200,
        "bytes": 2,
        "cache": "-",
        "ms": 0.4,
    }
    entry = json.loads(JsonFormatter().format(_record("access line", access=access)))
    assert entry["message"] == "access line"
    assert {key: entry[key] for key in access} == access


def test_json_formatter_includes_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed"
    assert "ValueError: boom" in entry["exception"]


def test_log_format_flag() -> None:
    assert parse_args([]).log_format == "text"
    assert parse_args(["--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit):
        parse_args(["--log-format", "xml"])
