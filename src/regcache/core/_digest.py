"""Content digests: parsing, validation and incremental verification.

Follows the OCI image spec, "Digests": ``algorithm ":" encoded``. Only the
registered algorithms ``sha256`` (64 lower-case hex) and ``sha512`` (128
lower-case hex) are accepted: a digest is used to build storage paths, so
nothing but a validated one may ever reach the file system.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import attrs

from ._errors import DigestMismatchError, ErrorCode, RemoteProtocolError

#: Hex length per supported algorithm. Anything else is refused.
ALGORITHM_HEX_LENGTHS: Final = {"sha256": 64, "sha512": 128}

_HEX_RE: Final = re.compile(r"[0-9a-f]+\Z")


@attrs.frozen(order=True)
class Digest:
    """A validated content digest such as ``sha256:e3b0…``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate ``algorithm:hex``; raise ``DIGEST_INVALID`` if malformed."""
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise RemoteProtocolError(
                ErrorCode.DIGEST_INVALID, f"digest {text[:80]!r} has no algorithm prefix"
            )
        expected_length = ALGORITHM_HEX_LENGTHS.get(algorithm)
        if expected_length is None:
            raise RemoteProtocolError(
                ErrorCode.DIGEST_INVALID,
                f"digest algorithm {algorithm[:20]!r} is not supported (only sha256 and sha512)",
            )
        if len(encoded) != expected_length or not _HEX_RE.match(encoded):
            raise RemoteProtocolError(
                ErrorCode.DIGEST_INVALID,
                f"{algorithm} digest must be {expected_length} lower-case hex characters",
            )
        return cls(algorithm, encoded)

    @classmethod
    def of_bytes(cls, content: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``content``."""
        return cls(algorithm, hashlib.new(algorithm, content).hexdigest())

    def verifier(self) -> DigestVerifier:
        """A fresh incremental verifier for content expected to have this digest."""
        return DigestVerifier(self)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class DigestVerifier:
    """Hashes content as it arrives and checks it against an expected digest.

    ``update`` is called once per chunk on the hot path, so it does nothing
    but feed the hash.
    """

    __slots__ = ("_hash", "expected", "length")

    def __init__(self, expected: Digest) -> None:
        self.expected = expected
        self._hash = hashlib.new(expected.algorithm)
        self.length = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk of content."""
        self._hash.update(chunk)
        self.length += len(chunk)

    def actual(self) -> Digest:
        """The digest of what has been fed so far."""
        return Digest(self.expected.algorithm, self._hash.hexdigest())

    def matches(self) -> bool:
        """Whether what has been fed so far hashes to the expected digest."""
        return self._hash.hexdigest() == self.expected.hex

    def verify(self) -> None:
        """Raise :class:`DigestMismatchError` unless the content matched."""
        if not self.matches():
            raise DigestMismatchError(str(self.expected), str(self.actual()))
