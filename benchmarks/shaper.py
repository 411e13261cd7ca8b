"""A TCP relay that carries its target's answers at a fixed rate: a thin uplink.

``python shaper.py LISTEN_PORT TARGET_PORT BYTES_PER_SECOND`` relays every
connection on 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. Bytes from the
target back to the clients share one rate limit, as they would share one
uplink; requests go through unshaped. The cold "uplink" scenarios put it
between the caches and the upstream registry, so that the link and not the
server's CPU is the limit, as it is for the clusters regcache is built for.
Runs until killed.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time

CHUNK = 64 * 1024


class Link:
    """The shared rate limit: hands out transmission slots one chunk at a time."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self._lock = threading.Lock()
        self._free_at = time.monotonic()

    def carry(self, count: int) -> None:
        """Sleep until ``count`` bytes have crossed the link behind those before them."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + count / self.rate
            arrival = self._free_at
        delay = arrival - now
        if delay > 0:
            time.sleep(delay)


def pipe(source: socket.socket, sink: socket.socket, link: Link | None) -> None:
    try:
        while data := source.recv(CHUNK):
            if link is not None:
                link.carry(len(data))
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


def relay(client: socket.socket, target_port: int, link: Link) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port))
    except OSError:
        client.close()
        return
    up = threading.Thread(target=pipe, args=(client, upstream, None), daemon=True)
    up.start()
    pipe(upstream, client, link)
    up.join()
    client.close()
    upstream.close()


def main() -> None:
    listen_port, target_port, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    link = Link(rate)
    listener = socket.create_server(("127.0.0.1", listen_port), backlog=256)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client, target_port, link), daemon=True).start()


if __name__ == "__main__":
    main()
