"""Web servers (uvicorn, hypercorn, gunicorn, waitress) as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from support._process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: How long a server may take to accept connections.
STARTUP_TIMEOUT = 30.0


class Host(ServerProcess):
    stop_timeout = 20.0

    """A web server process serving an adapter app on 127.0.0.1."""

    def __init__(self, directory: Path, argv: list[str], env: dict[str, str], port: int) -> None:
        self.directory = directory
        self.argv = argv
        self.env = env
        super().__init__(directory / f"{Path(argv[2] if argv[1] == '-m' else argv[0]).name}.log")
        self.port = port

    def start(self) -> Host:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.directory
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv} exited early:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            return self
        self.stop()
        raise RuntimeError(f"{self.argv} did not listen:\n{self.log()}")


#: The servers under test: name -> argv after the Python interpreter, given
#: the port and the module:attribute of the app.
SERVERS: dict[str, Callable[[int, str], list[str]]] = {
    "uvicorn": lambda port, app: [
        "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--no-access-log", app
    ],
    "hypercorn-trio": lambda port, app: [
        "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "trio", app
    ],
    "hypercorn-asyncio": lambda port, app: [
        "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "asyncio", app
    ],
    "gunicorn": lambda port, app: [
        "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
        "--workers", "1", "--threads", "24", "--timeout", "120", "--no-control-socket", app,
    ],
    "waitress": lambda port, app: [
        "-m", "waitress", "--listen", f"127.0.0.1:{port}", "--threads", "24",
        # skopeo and podman try TLS first; waitress would sit on the
        # handshake until the client gives up (10 s) without these.
        "--channel-timeout", "2", "--cleanup-interval", "1", app,
    ],
}  # fmt: skip

ASGI_SERVERS = ("uvicorn", "hypercorn-trio", "hypercorn-asyncio")
WSGI_SERVERS = ("gunicorn", "waitress")


def server_env(config_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a server process: the app's config, no stray settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("REGCACHE_") and "PROXY" not in key.upper()
    }
    paths = [ROOT / "adapters", ROOT / "examples", HERE, ROOT / "src"]
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    env["REGCACHE_CONFIG"] = str(config_path)
    env.update(extra)
    return env


#: Starts a server: ``make(server, "module:app", **extra_env)``.
HostFactory = Callable[..., Host]
