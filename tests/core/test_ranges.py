"""Byte ranges for blob requests (RFC 9110 §14)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcache.core import ErrorCode, RegcacheError, RemoteProtocolError
from regcache.core._ranges import ByteRange, parse_content_range, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, ByteRange(0, 99, 1000)),
        ("bytes=500-", 1000, ByteRange(500, 999, 1000)),
        ("bytes=-100", 1000, ByteRange(900, 999, 1000)),
        ("bytes=-5000", 1000, ByteRange(0, 999, 1000)),
        ("bytes=990-5000", 1000, ByteRange(990, 999, 1000)),
        ("Bytes = 1-1", 10, ByteRange(1, 1, 10)),
    ],
)
def test_single_ranges(header: str, size: int, expected: ByteRange) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "items=0-1",
        "bytes=0-1,5-6",
        "bytes=5-2",
        "bytes=a-b",
        "bytes=-",
        "bytes 0-1",
        "x" * 300,
    ],
)
def test_ignored_headers_mean_whole_content(header: str | None) -> None:
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=0-", 0)]
)
def test_unsatisfiable_is_416_with_content_range(header: str, size: int) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        parse_range(header, size)
    assert caught.value.code is ErrorCode.RANGE_INVALID
    assert caught.value.status == 416
    assert ("Content-Range", f"bytes */{size}") in caught.value.headers


def test_content_range_rendering_and_parsing() -> None:
    byte_range = ByteRange(10, 19, 100)
    assert byte_range.length == 10
    assert parse_content_range(byte_range.content_range()) == (10, 19, 100)
    assert parse_content_range("bytes 0-9/*") == (0, 9, None)
    assert parse_content_range("bytes 0-9") is None
    assert parse_content_range("items 0-9/10") is None
    assert parse_content_range(None) is None


@given(st.text(max_size=60), st.integers(min_value=0, max_value=10**12))
def test_random_headers_raise_only_our_errors(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except RegcacheError:
        return
    if result is not None:
        assert 0 <= result.first <= result.last < size
        assert result.size == size


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(1, 10**9))
def test_explicit_ranges_stay_inside_content(first: int, last: int, size: int) -> None:
    try:
        result = parse_range(f"bytes={first}-{last}", size)
    except RemoteProtocolError:
        assert first >= size
        return
    if last < first:
        assert result is None
    else:
        assert result == ByteRange(first, min(last, size - 1), size)


@pytest.mark.parametrize("header", ["bytes=\u00b9-2", "bytes=1-\u0662", "bytes=-\u00b2"])
def test_non_ascii_digits_are_not_numbers(header: str) -> None:
    assert parse_range(header, 1000) is None
    assert parse_content_range("bytes 1-\u00b2/3") is None
