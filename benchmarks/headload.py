"""A small keep-alive HEAD load generator (wrk waits for a body after HEAD).

``python headload.py HOST PORT PATH CONNECTIONS SECONDS [HEADER ...]`` keeps
CONNECTIONS connections busy with one outstanding request each and prints one
JSON line like the wrk script's: requests, bytes, duration_us, p50_us,
p99_us, errors. One thread and one selector: it is cheap per request, but on
one CPU it tops out in the tens of thousands of requests per second, so a
server faster than that is measured at the client's limit.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time


def main() -> int:
    host, port, path, conns, seconds = sys.argv[1:6]
    headers = "".join(f"{h}\r\n" for h in sys.argv[6:])
    request = f"HEAD {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode()
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, list[object]] = {}
    for _ in range(int(conns)):
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        state[sock] = [b"", 0.0]
    latencies: list[float] = []
    received = errors = 0
    start = time.perf_counter()
    end = start + float(seconds)
    for sock, st in state.items():
        st[1] = time.perf_counter()
        sock.send(request)
    now = start
    while now < end:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj  # type: ignore[assignment]
            st = state[sock]
            data = sock.recv(65536)
            if not data:
                errors += 1
                selector.unregister(sock)
                continue
            received += len(data)
            buffer = st[0] + data  # type: ignore[operator]
            while b"\r\n\r\n" in buffer:
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                now = time.perf_counter()
                latencies.append(now - st[1])  # type: ignore[operator]
                st[1] = now
                sock.send(request)
            st[0] = buffer
        now = time.perf_counter()
    duration = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> int:
        return int(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e6)

    print(
        json.dumps(
            {
                "requests": len(latencies),
                "bytes": received,
                "duration_us": int(duration * 1e6),
                "p50_us": pct(0.5) if latencies else 0,
                "p99_us": pct(0.99) if latencies else 0,
                "errors": errors,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
