"""Runs ``python -m regcache.proxy`` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from ._process import ServerProcess

#: How long regcache may take to start listening.
STARTUP_TIMEOUT = 20.0

_LISTENING = re.compile(r"mirror listening on (\S+):(\d+)")
_PROXY_LISTENING = re.compile(r"CONNECT proxy listening on (\S+):(\d+)")


class Regcache(ServerProcess):
    """A regcache process with its own config, data directory and log."""

    def __init__(
        self,
        directory: Path,
        config: str,
        *,
        env: dict[str, str] | None = None,
        proxy: bool = False,
        extra_args: tuple[str, ...] = (),
        file_size_limit: int | None = None,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "regcache.toml"
        super().__init__(directory / "regcache.log")
        self.data_dir = directory / "data"
        self.config_path.write_text(f'data_dir = "{self.data_dir}"\n' + config)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("REGCACHE_") and "PROXY" not in key.upper()
        }
        self.env.update(env or {})
        #: Whether the CONNECT front end runs too, and its port.
        self.proxy = proxy
        self.proxy_port = 0
        #: RLIMIT_FSIZE for the process: writes past it fail with EFBIG, the
        #: way a full disk fails them, without filling any real disk.
        self.file_size_limit = file_size_limit
        #: More command-line flags, after the fixed ones.
        self.extra_args = tuple(extra_args)

    def start(self) -> Regcache:
        """Start regcache and wait until the mirror listens."""
        log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "regcache.proxy",
                "--config",
                str(self.config_path),
                "--mirror-listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0" if self.proxy else "",
                "--log-level",
                "debug",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            preexec_fn=self._limits if self.file_size_limit else None,
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            found = _LISTENING.search(text)
            found_proxy = _PROXY_LISTENING.search(text)
            if found and (found_proxy or not self.proxy):
                self.port = int(found.group(2))
                self.proxy_port = int(found_proxy.group(2)) if found_proxy else 0
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"regcache exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"regcache did not start listening:\n{self.log()}")

    def _limits(self) -> None:
        assert self.file_size_limit is not None
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_limit, self.file_size_limit))

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def restart(self, config: str | None = None) -> Regcache:
        """Stop, optionally rewrite the configuration, start again on the same data."""
        self.stop()
        if config is not None:
            self.config_path.write_text(f'data_dir = "{self.data_dir}"\n' + config)
        return self.start()

    @property
    def proxy_url(self) -> str:
        """URL of the CONNECT front end, for HTTPS_PROXY."""
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def ca_file(self) -> Path:
        """The interception CA regcache made in its data directory."""
        return self.data_dir / "ca" / "ca.crt"
