"""The error tree of regcache, and the OCI error codes it answers with.

Every exception regcache raises derives from :class:`RegcacheError`. Protocol
errors split into *local* ones (the caller used an API wrongly) and *remote*
ones (a client or an upstream sent something we refuse); a remote error
carries the OCI error code and the HTTP status a server should answer with.

The codes and their statuses follow the OCI distribution spec, section
"Error Codes" (code-1 to code-14), and the JSON body is the spec's
``{"errors": [{"code", "message", "detail"}]}``.
"""

from __future__ import annotations

import enum
import json
from typing import Any


class ErrorCode(enum.Enum):
    """An OCI distribution error code, with the HTTP status it is answered with."""

    BLOB_UNKNOWN = ("BLOB_UNKNOWN", 404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
    DIGEST_INVALID = ("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (
        "MANIFEST_BLOB_UNKNOWN",
        404,
        "manifest references a manifest or blob unknown to registry",
    )
    MANIFEST_INVALID = ("MANIFEST_INVALID", 400, "manifest invalid")
    MANIFEST_UNKNOWN = ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
    NAME_INVALID = ("NAME_INVALID", 400, "invalid repository name")
    NAME_UNKNOWN = ("NAME_UNKNOWN", 404, "repository name not known to registry")
    SIZE_INVALID = ("SIZE_INVALID", 400, "provided length did not match content length")
    UNAUTHORIZED = ("UNAUTHORIZED", 401, "authentication required")
    DENIED = ("DENIED", 403, "requested access to the resource is denied")
    UNSUPPORTED = ("UNSUPPORTED", 405, "the operation is unsupported")
    TOOMANYREQUESTS = ("TOOMANYREQUESTS", 429, "too many requests")
    # Not in the spec's table, but used by distribution and needed by a proxy.
    RANGE_INVALID = ("RANGE_INVALID", 416, "invalid content range")
    UNAVAILABLE = ("UNAVAILABLE", 503, "service unavailable")
    UPSTREAM_ERROR = ("UNKNOWN", 502, "the upstream registry failed")
    UNKNOWN = ("UNKNOWN", 500, "unknown error")

    def __init__(self, wire_name: str, status: int, default_message: str) -> None:
        self.wire_name = wire_name
        self.status = status
        self.default_message = default_message


class RegcacheError(Exception):
    """The base of every error regcache raises."""


class ProtocolError(RegcacheError):
    """A protocol rule was broken, by us (local) or by a peer (remote)."""


class LocalProtocolError(ProtocolError):
    """The caller used a regcache API in a way the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """A peer (a client or an upstream) sent something regcache refuses.

    ``code`` is the OCI error code to answer with; ``status`` is its HTTP
    status unless overridden; ``detail`` is optional JSON-able context.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        status: int | None = None,
        detail: Any = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.code = code
        self.message = message if message is not None else code.default_message
        self.status = status if status is not None else code.status
        self.detail = detail
        # Extra response headers the answer must carry (a WWW-Authenticate
        # challenge on 401, Retry-After on 429).
        self.headers = headers
        super().__init__(self.message)

    def to_body(self) -> bytes:
        """The OCI error JSON body for this error."""
        return error_body(self.code, self.message, self.detail)


class AuthError(RemoteProtocolError):
    """Authentication with an upstream or of a client failed."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.UNAUTHORIZED,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(code, message, status=status, headers=headers)


class DigestMismatchError(RemoteProtocolError):
    """Content did not hash to the digest it was fetched or stored under."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            ErrorCode.UPSTREAM_ERROR,
            f"content digest {actual} does not match the expected {expected}",
            detail={"expected": expected, "actual": actual},
        )


class StorageError(RegcacheError):
    """The content store failed (disk full, permissions, a broken file)."""


class ConfigError(RegcacheError):
    """The configuration was refused. ``key_path`` names the offending key."""

    def __init__(self, key_path: str, reason: str) -> None:
        self.key_path = key_path
        self.reason = reason
        super().__init__(f"{key_path}: {reason}" if key_path else reason)


def error_body(code: ErrorCode, message: str | None = None, detail: Any = None) -> bytes:
    """Render the OCI ``{"errors": [...]}`` JSON body for one error."""
    entry: dict[str, Any] = {
        "code": code.wire_name,
        "message": message if message is not None else code.default_message,
    }
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}, separators=(",", ":")).encode()
