"""Small trio stream helpers shared by the engine and the front ends."""

from __future__ import annotations

import trio


class PrefixedStream(trio.abc.Stream):
    """A stream that first returns bytes already read past a CONNECT exchange.

    Both ends of regcache meet them: the upstream client after its proxy's
    CONNECT answer, the CONNECT front end after the client's request.
    """

    def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes) -> None:
        self.transport_stream = transport_stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()

    @property
    def has_prefix(self) -> bool:
        return bool(self._prefix)
