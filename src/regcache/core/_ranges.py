"""HTTP byte ranges for blob requests (RFC 9110 §14).

Registries and their clients use a single range (``bytes=N-`` to resume a
layer, ``bytes=N-M`` for chunks). Multiple ranges would need a
``multipart/byteranges`` body that no registry client asks for, so they are
answered with the whole content, which RFC 9110 §14.2 allows: a server may
ignore a Range header.
"""

from __future__ import annotations

import attrs

from ._errors import ErrorCode, RemoteProtocolError

#: A Range header longer than this is not a single byte range; ignoring it is
#: allowed and keeps hostile headers from costing parse time.
MAX_RANGE_HEADER = 200


@attrs.frozen
class ByteRange:
    """An inclusive byte range ``first..last`` of content of ``size`` bytes."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.last - self.first + 1

    def content_range(self) -> str:
        """The ``Content-Range`` header value for a 206 answer."""
        return f"bytes {self.first}-{self.last}/{self.size}"


def unsatisfiable(size: int) -> RemoteProtocolError:
    """The 416 error for a range outside content of ``size`` bytes."""
    return RemoteProtocolError(
        ErrorCode.RANGE_INVALID,
        f"requested range is outside the content ({size} bytes)",
        headers=(("Content-Range", f"bytes */{size}"),),
    )


def _decimal(text: str) -> bool:
    # str.isdigit() also admits superscripts and other scripts' digits.
    return text.isascii() and text.isdigit()


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """Parse a ``Range`` header against content of ``size`` bytes.

    Returns ``None`` when the whole content should be sent (no header, a
    header that is not a single byte range). Raises a 416 error when the range
    cannot be satisfied.
    """
    if header is None or len(header) > MAX_RANGE_HEADER:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (_decimal(first_text) or first_text == ""):
        return None
    if last_text and not _decimal(last_text):
        return None
    if first_text == "":
        # Suffix range: the last N bytes.
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise unsatisfiable(size)
        return ByteRange(max(size - suffix, 0), size - 1, size)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # RFC 9110 §14.1.1: an invalid range-spec, so the header is ignored
    if first >= size:
        raise unsatisfiable(size)
    last = int(last_text) if last_text else size - 1
    return ByteRange(first, min(last, size - 1), size)


def parse_content_range(header: str | None) -> tuple[int, int, int | None] | None:
    """Parse a 206 answer's ``Content-Range: bytes first-last/size``.

    Returns ``(first, last, size)`` with ``size`` None for ``*``, or ``None``
    when the header is absent or malformed.
    """
    if header is None or len(header) > MAX_RANGE_HEADER:
        return None
    unit, _, rest = header.strip().partition(" ")
    if unit.lower() != "bytes":
        return None
    span, slash, total = rest.strip().partition("/")
    first_text, dash, last_text = span.partition("-")
    if not (slash and dash and _decimal(first_text) and _decimal(last_text)):
        return None
    if total != "*" and not _decimal(total):
        return None
    return int(first_text), int(last_text), (None if total == "*" else int(total))
