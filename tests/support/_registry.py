"""A real upstream registry: CNCF distribution 2.8 (Debian's docker-registry).

Writes a ``config.yml`` (distribution docs/configuration.md), runs
``docker-registry serve`` as a subprocess on 127.0.0.1, waits until ``/v2/``
answers, and parses its access log (Apache combined format, written to the
process's stdout) into request counts.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

import attrs

from ._issuer import DEFAULT_ISSUER, DEFAULT_SERVICE, TokenIssuer
from ._pki import PKI
from ._server import Startable, free_port

DEFAULT_BINARY = "/usr/bin/docker-registry"

# Bounds on waiting for the registry process to come up and to go away.
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# Attempts with a fresh port if the chosen one was taken in the meantime.
START_ATTEMPTS = 3

# `127.0.0.1 - - [28/Nov/2026:00:36:33 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "ua"`
_ACCESS_LINE = re.compile(
    r"^(?P<client>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>\S+) (?P<target>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
)


@attrs.frozen
class AccessLogEntry:
    """One line of the registry's access log."""

    method: str
    path: str
    query: str
    status: int
    size: int
    user_agent: str


class UpstreamRegistry(Startable):
    """docker-registry serving from a directory, with TLS and token auth.

    ``auth=False`` runs an open registry, ``tls=False`` plain HTTP. ``stop()``
    then ``start()`` (or ``restart()``) keeps the data and the port.
    """

    def __init__(
        self,
        directory: Path,
        pki: PKI,
        issuer: TokenIssuer | None = None,
        *,
        auth: bool = True,
        tls: bool = True,
        service: str = DEFAULT_SERVICE,
        issuer_name: str = DEFAULT_ISSUER,
        binary: str = DEFAULT_BINARY,
        host: str = "127.0.0.1",
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if auth and issuer is None:
            raise ValueError("a registry with token auth needs a TokenIssuer")
        self.directory = directory
        self.pki = pki
        self.issuer = issuer
        self.auth = auth
        self.tls = tls
        self.service = issuer.service if issuer is not None else service
        self.issuer_name = issuer.issuer if issuer is not None else issuer_name
        self.binary = binary
        self.host = host
        self.startup_timeout = startup_timeout
        self.data_dir = directory / "data"
        self.config_path = directory / "config.yml"
        self.log_path = directory / "registry.log"
        """The registry's own log (stderr, logrus text format)."""
        self.access_log_path = directory / "access.log"
        """The access log (stdout, Apache combined format)."""
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)

    # -- addresses -----------------------------------------------------------

    @property
    def scheme(self) -> str:
        """``https`` or ``http``."""
        return "https" if self.tls else "http"

    @property
    def netloc(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT``."""
        return f"{self.scheme}://{self.netloc}"

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the registry's certificate."""
        return self.pki.ca_pem

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the registry's certificate."""
        return self.pki.client_ssl_context()

    # -- configuration -------------------------------------------------------

    def config_text(self) -> str:
        """The YAML configuration for the current port."""
        # JSON strings are valid YAML double-quoted scalars.
        q = json.dumps
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: text",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {q(str(self.data_dir))}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: {q(self.netloc)}",
            f"  secret: {q('regcache-test-secret')}",
        ]
        if self.tls:
            lines += [
                "  tls:",
                f"    certificate: {q(str(self.pki.server_cert_pem))}",
                f"    key: {q(str(self.pki.server_key_pem))}",
            ]
        if self.auth:
            assert self.issuer is not None
            lines += [
                "auth:",
                "  token:",
                f"    realm: {q(self.issuer.realm)}",
                f"    service: {q(self.service)}",
                f"    issuer: {q(self.issuer_name)}",
                f"    rootcertbundle: {q(str(self.pki.signing_cert_pem))}",
            ]
        return "\n".join(lines) + "\n"

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the registry process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the registry and wait until ``/v2/`` answers."""
        if self.running:
            return
        keep_port = self.port != 0
        for attempt in range(START_ATTEMPTS):
            if not keep_port:
                self.port = free_port(self.host)
            try:
                self._spawn()
                return
            except RuntimeError:
                if keep_port or attempt == START_ATTEMPTS - 1:
                    raise

    def _spawn(self) -> None:
        self.config_path.write_text(self.config_text())
        # docker-registry reads every REGISTRY_* variable as a config override.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with (
            self.access_log_path.open("ab") as stdout,
            self.log_path.open("ab") as stderr,
        ):
            self._process = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=self.directory,
            )
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self) -> None:
        expected = 401 if self.auth else 200
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                status = self._probe()
            except (OSError, http.client.HTTPException) as error:
                last_error = repr(error)
            else:
                if status == expected:
                    return
                last_error = f"status {status}"
            time.sleep(0.05)
        raise RuntimeError(
            f"docker-registry not ready after {self.startup_timeout} s ({last_error}):\n"
            + self.log_tail()
        )

    def _probe(self) -> int:
        connection: http.client.HTTPConnection
        if self.tls:
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=2, context=self.ssl_context()
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=2)
        try:
            connection.request("GET", "/v2/", headers={"User-Agent": "regcache-test-probe"})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def stop(self) -> None:
        """Terminate the registry (kill after a bounded wait); data is kept."""
        self._terminate()

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    # -- logs ----------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the registry's own log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def access_log(self) -> list[AccessLogEntry]:
        """Every request in the access log, oldest first (probes excluded).

        The registry writes a line after the response has been sent, so a
        client may see its response a moment before the line appears: use
        ``wait_for_requests`` when counting right after a client finishes.
        """
        entries: list[AccessLogEntry] = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.access_log_path.read_text(errors="replace").splitlines():
                match = _ACCESS_LINE.match(line)
                if match is None or match["agent"] == "regcache-test-probe":
                    continue
                path, _, query = match["target"].partition("?")
                size = match["size"]
                entries.append(
                    AccessLogEntry(
                        method=match["method"],
                        path=path,
                        query=query,
                        status=int(match["status"]),
                        size=0 if size == "-" else int(size),
                        user_agent=match["agent"] or "",
                    )
                )
        return entries

    def request_counts(self) -> collections.Counter[tuple[str, str]]:
        """Requests in the access log by (method, path without query)."""
        return collections.Counter((e.method, e.path) for e in self.access_log())

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[AccessLogEntry]:
        """Wait until the access log holds at least count entries; return them."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.access_log()
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)
