"""A server the tests run as a real process on 127.0.0.1: stop, log, plain HTTP."""

from __future__ import annotations

import http.client
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self


class ServerProcess:
    """What every test server process shares; subclasses start it."""

    #: How long the process may take to exit after SIGTERM before it is killed.
    stop_timeout = 15.0

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.exit_code: int | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> int | None:
        """SIGTERM, then wait; kill only if it does not exit. Returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return self.exit_code
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.exit_code = process.returncode
        return self.exit_code

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def netloc(self) -> str:
        """host:port it serves on."""
        return f"127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        """One plain HTTP request: (status, headers lower-cased, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, target, headers=headers or {})
            response = connection.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            connection.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
