"""Benchmarks regcache against nginx and distribution on 127.0.0.1.

Run through ``benchmarks/run``. Every server runs pinned to CPU 0 and every
client (curl, wrk) and the upstream registry to CPU 1 when the machine has two
cores or more. Each scenario runs several rounds, interleaving the systems so
that noise hits them alike; figures are medians over the rounds, with min and
max kept. Every body is checked against its sha256 at least once per system
and scenario before it is timed.

Writes ``benchmarks/results/latest.json``, ``latest.md`` and
``docs/performance.md`` (the table plus ``benchmarks/analysis.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import http.client
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
REGISTRY_BIN = "/usr/bin/docker-registry"
NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"
HOST = "127.0.0.1"
REGISTRY_NAME = "bench.regcache.test"
REPO = "bench/app"
MIB = 1024 * 1024
GIB = 1024 * MIB
MB = 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

#: The uplink of the cold "uplink" scenarios, in MB/s (50 MB/s = 400 Mbit/s).
UPLINK_MB_S = 50

MULTI_CPU = (os.cpu_count() or 1) >= 2
SERVER_CPU = "0"
CLIENT_CPU = "1"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pin(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if MULTI_CPU else argv


def rotated(systems: list[str], round_: int) -> list[str]:
    """The systems in a different order each round, so none always goes first."""
    shift = round_ % len(systems)
    return systems[shift:] + systems[:shift]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_http(port: int, path: str = "/v2/", timeout: float = 20.0, tls: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                pass
            if tls:
                return
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on {HOST}:{port}") from None
            time.sleep(0.05)


# -- processes -----------------------------------------------------------------


class Server:
    """A server process we started; stopped at exit whatever happens."""

    running: ClassVar[list[Server]] = []

    def __init__(
        self,
        name: str,
        argv: list[str],
        logfile: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.cwd = cwd
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "REGCACHE_"))}
        env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
        env.update(self.extra_env)
        with self.logfile.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
            )
        Server.running.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        if self in Server.running:
            Server.running.remove(self)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def cpu_seconds(self) -> float:
        """utime + stime of the process and its descendants (nginx workers)."""
        return sum(_cpu_of(pid) for pid in _tree(self.pid))

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def _cpu_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command: state is [0], utime [11], stime [12].
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def stop_all() -> None:
    for server in list(Server.running):
        with contextlib.suppress(Exception):
            server.stop()


def _on_signal(signum: int, _frame: object) -> None:
    stop_all()
    sys.exit(128 + signum)


# -- the systems -----------------------------------------------------------------


def registry_config(
    root: Path, port: int, remote: str | None = None, tls: tuple[Path, Path] | None = None
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {json.dumps(str(root))}",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: {json.dumps(f'{HOST}:{port}')}",
        '  secret: "bench"',
    ]
    if tls:
        cert, key = tls
        lines += [
            "  tls:",
            f"    certificate: {json.dumps(str(cert))}",
            f"    key: {json.dumps(str(key))}",
        ]
    if remote:
        lines += ["proxy:", f"  remoteurl: {json.dumps(remote)}"]
    return "\n".join(lines) + "\n"


def start_registry(
    name: str,
    work: Path,
    data: Path,
    cpu: str,
    remote: str | None = None,
    tls: tuple[Path, Path] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Server, int]:
    port = free_port()
    config = work / f"{name}.yml"
    config.write_text(registry_config(data, port, remote, tls))
    server = Server(
        name, pin(cpu, [REGISTRY_BIN, "serve", str(config)]), work / f"{name}.log", env=env
    ).start()
    wait_http(port)
    return server, port


def start_regcache(
    work: Path, name: str, upstream_port: int, ca_file: Path | None = None
) -> tuple[Server, int, int]:
    """regcache with the upstream at ``upstream_port``: HTTPS trusting ``ca_file`` if given."""
    directory = work / name
    directory.mkdir(parents=True, exist_ok=True)
    mirror, proxy = free_port(), free_port()
    config = directory / "regcache.toml"
    config.write_text(
        "\n".join(
            [
                f"data_dir = {json.dumps(str(directory / 'data'))}",
                "[mirror]",
                f'default_registry = "{REGISTRY_NAME}"',
                "[cache]",
                'tag_ttl = "1h"',
                f'[registries."{REGISTRY_NAME}"]',
                f'url = "{"https" if ca_file else "http"}://{HOST}:{upstream_port}"',
                *([f"ca_file = {json.dumps(str(ca_file))}"] if ca_file else []),
            ]
        )
        + "\n"
    )
    argv = [
        PYTHON,
        "-m",
        "regcache.proxy",
        "--config",
        str(config),
        "--mirror-listen",
        f"{HOST}:{mirror}",
        "--proxy-listen",
        f"{HOST}:{proxy}",
    ]
    server = Server(name, pin(SERVER_CPU, argv), directory / "regcache.log").start()
    wait_http(mirror)
    wait_http(proxy, tls=True)
    return server, mirror, proxy


ADAPTER_APPS = '''\
"""The adapter apps under benchmark, over the warm regcache instance's configuration."""

from pathlib import Path

from regcache.config import load_config
from regcache_adapters import asgi, wsgi

CONFIG_PATH = {config!r}


def _config():
    return load_config(Path(CONFIG_PATH).read_text(), {{}}, source=CONFIG_PATH)


def make_asgi():
    return asgi.create_app(_config())


def make_wsgi():
    return wsgi.create_app(_config())
'''


def start_adapter(work: Path, system: str, config: Path) -> tuple[Server, int]:
    """The ASGI app under uvicorn or the WSGI app under gunicorn, over ``config``.

    The app reads the same configuration (so the same data directory) as the
    regcache instance that wrote ``config``: the index is shared between
    processes, so what that instance cached is a hit here too.
    """
    directory = work / system
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench_apps.py").write_text(ADAPTER_APPS.format(config=str(config)))
    port = free_port()
    if system == "asgi-uvicorn":
        # asyncio and h11 (what uvicorn picks without uvloop and httptools);
        # uvicorn has no zero-copy send, so the adapter reads the file in 1 MiB chunks.
        server_argv = ["-m", "uvicorn", "--host", HOST, "--port", str(port)]
        server_argv += ["--no-access-log", "--factory", "bench_apps:make_asgi"]
    elif system == "wsgi-gunicorn":
        # One worker holds one engine; wsgi.file_wrapper makes gunicorn use sendfile.
        server_argv = ["-m", "gunicorn", "--bind", f"{HOST}:{port}", "--worker-class", "gthread"]
        server_argv += ["--workers", "1", "--threads", "8", "--timeout", "600"]
        server_argv += ["--no-control-socket", "bench_apps:make_wsgi()"]
    else:
        raise ValueError(system)
    server = Server(
        system,
        pin(SERVER_CPU, [PYTHON, *server_argv]),
        directory / f"{system}.log",
        cwd=directory,
        env={"PYTHONPATH": os.pathsep.join([str(directory), str(ROOT / "adapters")])},
    ).start()
    wait_http(port)
    return server, port


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {work}/nginx-access.log;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    default_type application/octet-stream;
    types {{ }}
    server {{
        listen {host}:{port};
        root {www};
        location /v2/{repo}/manifests/ {{ default_type {manifest_type}; }}
    }}
    server {{
        listen {host}:{tls_port} ssl;
        server_name {name};
        ssl_certificate {work}/nginx-cert.pem;
        ssl_certificate_key {work}/nginx-key.pem;
        root {www};
        location /v2/{repo}/manifests/ {{ default_type {manifest_type}; }}
    }}
}}
"""


def start_nginx(work: Path, www: Path) -> tuple[Server, int, int, Path]:
    """nginx over the same blob files, plain and HTTPS with an ECDSA P-256 leaf."""
    (work / "nginx-tmp").mkdir(exist_ok=True)
    ca_key, ca_pem = work / "nginx-ca-key.pem", work / "nginx-ca.pem"
    key, csr, cert = work / "nginx-key.pem", work / "nginx.csr", work / "nginx-cert.pem"
    ext = work / "nginx-ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{REGISTRY_NAME},IP:{HOST}\n")
    quiet: dict[str, Any] = {"check": True, "capture_output": True}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_pem),
            "-subj",
            "/CN=bench CA",
            "-days",
            "2",
        ],
        **quiet,
    )
    subprocess.run(
        [
            "openssl",
            "req",
            *ec,
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={REGISTRY_NAME}",
        ],
        **quiet,
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_pem),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "2",
            "-sha256",
            "-extfile",
            str(ext),
        ],
        **quiet,
    )
    port, tls_port = free_port(), free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",
            work=work,
            www=www,
            host=HOST,
            port=port,
            tls_port=tls_port,
            name=REGISTRY_NAME,
            repo=REPO,
            manifest_type=OCI_MANIFEST,
        )
    )
    server = Server(
        "nginx",
        pin(SERVER_CPU, [NGINX_BIN, "-c", str(conf), "-p", str(work)]),
        work / "nginx.log",
    ).start()
    wait_http(port, "/")
    wait_http(tls_port, tls=True)
    return server, port, tls_port, ca_pem


# -- content -----------------------------------------------------------------


class Blob:
    def __init__(self, path: Path, digest: str, size: int) -> None:
        self.path, self.digest, self.size = path, digest, size

    @classmethod
    def make(cls, path: Path, size: int, seed: int) -> Blob:
        digest = hashlib.sha256()
        rng = hashlib.shake_256(f"regcache-bench-{seed}".encode())
        block = rng.digest(MIB)  # repeated with a counter so content never repeats
        with path.open("wb") as out:
            for index in range(size // MIB):
                chunk = index.to_bytes(8, "big") + block[8:]
                out.write(chunk)
                digest.update(chunk)
            rest = size % MIB
            if rest:
                out.write(block[:rest])
                digest.update(block[:rest])
        return cls(path, "sha256:" + digest.hexdigest(), size)


def push_blob(port: int, blob_bytes: bytes | None, path: Path | None, digest: str) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    conn.request("POST", f"/v2/{REPO}/blobs/uploads/")
    response = conn.getresponse()
    response.read()
    if response.status != 202:
        raise RuntimeError(f"upload start: {response.status}")
    location = response.getheader("Location") or ""
    sep = "&" if "?" in location else "?"
    target = re.sub(r"^https?://[^/]+", "", location) + f"{sep}digest={digest}"
    if path is not None:
        size = path.stat().st_size
        with path.open("rb") as body:
            conn.request(
                "PUT",
                target,
                body=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            response = conn.getresponse()
    else:
        assert blob_bytes is not None
        conn.request(
            "PUT", target, body=blob_bytes, headers={"Content-Type": "application/octet-stream"}
        )
        response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 201:
        raise RuntimeError(f"upload of {digest}: {response.status}")


def push_manifest(port: int, body: bytes, tag: str) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request(
        "PUT", f"/v2/{REPO}/manifests/{tag}", body=body, headers={"Content-Type": OCI_MANIFEST}
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 201:
        raise RuntimeError(f"manifest push: {response.status}")


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- clients -----------------------------------------------------------------


def curl_base() -> list[str]:
    return pin(CLIENT_CPU, ["curl", "-sS", "--fail", "--noproxy", ""])


def curl_check(args: list[str], expected: str, what: str) -> None:
    """Fetch once and compare the body's sha256; raises on a mismatch."""
    result = subprocess.run(
        [*curl_base(), *args, "-o", "-"], capture_output=True, check=False, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what}: curl failed: {result.stderr.decode(errors='replace')}")
    actual = sha256_of(result.stdout)
    if actual != expected:
        raise RuntimeError(f"{what}: body sha256 {actual} != {expected}")


def curl_times(args: list[str], url: str, repeat: int) -> list[tuple[int, float, float]]:
    """(bytes, seconds, seconds to first byte) per transfer; one keep-alive connection."""
    fmt = "%{size_download} %{time_total} %{time_starttransfer} %{http_code}\\n"
    argv = [*curl_base(), *args, "-w", fmt]
    for _ in range(repeat):
        argv += [url, "-o", "/dev/null"]
    result = subprocess.run(argv, capture_output=True, check=False, timeout=600, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"curl {url}: {result.stderr}")
    rows = []
    for line in result.stdout.split("\n"):
        if line.strip():
            size, total, first, code = line.split()
            if code != "200":
                raise RuntimeError(f"curl {url}: status {code}")
            rows.append((int(size), float(total), float(first)))
    return rows


WRK_SCRIPT = """\
local method = os.getenv("BENCH_METHOD") or "GET"
wrk.method = method
local accept = os.getenv("BENCH_ACCEPT")
if accept then wrk.headers["Accept"] = accept end
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "bytes": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d,'
    .. ' "errors": %d}\\n',
    summary.requests, summary.bytes, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout))
end
"""


def wrk(
    url: str,
    connections: int,
    seconds: float,
    method: str = "GET",
    accept: str | None = None,
    work: Path | None = None,
) -> dict[str, float]:
    assert work is not None
    script = work / "wrk.lua"
    script.write_text(WRK_SCRIPT)
    env = dict(os.environ, BENCH_METHOD=method)
    if accept:
        env["BENCH_ACCEPT"] = accept
    argv = pin(
        CLIENT_CPU,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
    )
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, check=False, timeout=seconds + 60
    )
    line = [x for x in result.stdout.splitlines() if x.startswith("{")]
    if result.returncode != 0 or not line:
        raise RuntimeError(f"wrk {url}: {result.stdout}{result.stderr}")
    figures: dict[str, float] = json.loads(line[-1])
    if figures["errors"]:
        raise RuntimeError(f"wrk {url}: {figures['errors']} errors: {result.stdout}")
    return figures


def head_load(port: int, path: str, connections: int, seconds: float) -> dict[str, float]:
    argv = pin(
        CLIENT_CPU,
        [
            sys.executable,
            str(HERE / "headload.py"),
            HOST,
            str(port),
            path,
            str(connections),
            str(seconds),
            f"Accept: {OCI_MANIFEST}",
        ],
    )
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if result.returncode != 0:
        raise RuntimeError(f"headload {port}{path}: {result.stderr}")
    figures: dict[str, float] = json.loads(result.stdout.splitlines()[-1])
    if figures["errors"] or not figures["requests"]:
        raise RuntimeError(f"headload {port}{path}: {figures}")
    return figures


# -- measurement bookkeeping -----------------------------------------------------


class Scenario:
    def __init__(self, name: str, unit: str, higher_is_better: bool, description: str) -> None:
        self.name, self.unit, self.higher = name, unit, higher_is_better
        self.description = description
        self.samples: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.extra: dict[str, dict[str, list[float]]] = {}
        self.note = ""

    def add(
        self, system: str, value: float, cpu_s_per_gib: float | None = None, **extra: float
    ) -> None:
        self.samples.setdefault(system, []).append(value)
        if cpu_s_per_gib is not None:
            self.cpu.setdefault(system, []).append(cpu_s_per_gib)
        for key, val in extra.items():
            self.extra.setdefault(key, {}).setdefault(system, []).append(val)

    def to_json(self) -> dict[str, Any]:
        def r(x: float) -> float:
            return round(x, 3 if abs(x) < 100 else 1)

        out: dict[str, Any] = {
            "name": self.name,
            "unit": self.unit,
            "higher_is_better": self.higher,
            "description": self.description,
            "figures": {k: r(statistics.median(v)) for k, v in self.samples.items()},
            "min": {k: r(min(v)) for k, v in self.samples.items()},
            "max": {k: r(max(v)) for k, v in self.samples.items()},
            "runs": {k: len(v) for k, v in self.samples.items()},
        }
        if self.cpu:
            out["cpu_s_per_gib"] = {k: r(statistics.median(v)) for k, v in self.cpu.items()}
        for key, per_system in self.extra.items():
            out[key] = {k: r(statistics.median(v)) for k, v in per_system.items()}
        if self.note:
            out["note"] = self.note
        return out


# -- the bench ---------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.quick = args.quick
        self.work = work
        self.rounds = 2 if self.quick else args.rounds
        self.big_size = (32 if self.quick else 256) * MIB
        self.fan_size = (4 if self.quick else 16) * MIB
        self.cold_fan_size = (8 if self.quick else 64) * MIB
        self.cold_clients = 50
        self.wrk_seconds = 2 if self.quick else 4
        self.big_repeat = 4 if self.quick else 8
        self.scenarios: list[Scenario] = []

    # setup ------------------------------------------------------------------

    def setup(self) -> None:
        work = self.work
        log("making blobs")
        self.big = Blob.make(work / "big.bin", self.big_size, 1)
        self.fan = Blob.make(work / "fan.bin", self.fan_size, 2)
        self.cold_fan = Blob.make(work / "coldfan.bin", self.cold_fan_size, 3)
        self.origin_data = work / "origin-data"
        # The upstream ("origin") runs with the clients on CPU 1; the same
        # storage served by a second distribution on CPU 0 is the warm reference.
        self.origin, self.origin_port = start_registry("origin", work, self.origin_data, CLIENT_CPU)
        log("pushing blobs and a manifest to the upstream registry")
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        self.config_digest = sha256_of(config)
        push_blob(self.origin_port, config, None, self.config_digest)
        layers = []
        for blob in (self.big, self.fan, self.cold_fan):
            push_blob(self.origin_port, None, blob.path, blob.digest)
            layers.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": blob.digest,
                    "size": blob.size,
                }
            )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": self.config_digest,
                    "size": len(config),
                },
                "layers": layers,
            },
            indent=3,
        ).encode()
        self.manifest = manifest
        self.manifest_digest = sha256_of(manifest)
        push_manifest(self.origin_port, manifest, "latest")
        for blob in (self.big, self.fan, self.cold_fan):
            blob.path.unlink()  # the registry's copy is the one served

        self.dist, self.dist_port = start_registry(
            "distribution", work, self.origin_data, SERVER_CPU
        )
        # nginx serves the very files distribution stores (hard links).
        www = work / "www"
        blobs_dir = www / "v2" / REPO / "blobs"
        manifests_dir = www / "v2" / REPO / "manifests"
        blobs_dir.mkdir(parents=True)
        manifests_dir.mkdir(parents=True)
        for blob in (self.big, self.fan):
            hexd = blob.digest.split(":")[1]
            stored = self.origin_data / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
            os.link(stored, blobs_dir / blob.digest)
        (manifests_dir / self.manifest_digest).write_bytes(manifest)
        (manifests_dir / "latest").write_bytes(manifest)
        self.nginx, self.nginx_port, self.nginx_tls_port, self.nginx_ca = start_nginx(work, www)

        self.rc, self.rc_port, self.rc_proxy = start_regcache(
            work, "regcache-warm", self.origin_port
        )
        self.rc_ca = work / "regcache-warm" / "data" / "ca" / "ca.crt"
        log("warming regcache's cache through the mirror")
        for blob in (self.big, self.fan):
            curl_check([self.url("regcache", blob)], blob.digest, "regcache warm-up")
        self.manifest_get("regcache")
        self.manifest_get("regcache", "latest")

    def url(self, system: str, blob: Blob) -> str:
        port = {"regcache": self.rc_port, "nginx": self.nginx_port, "distribution": self.dist_port}[
            system
        ]
        return f"http://{HOST}:{port}/v2/{REPO}/blobs/{blob.digest}"

    def tls_args(self, system: str, blob: Blob) -> tuple[list[str], str]:
        path = f"/v2/{REPO}/blobs/{blob.digest}"
        if system == "regcache":
            return (
                ["--cacert", str(self.rc_ca), "--proxy", f"http://{HOST}:{self.rc_proxy}"],
                f"https://{REGISTRY_NAME}{path}",
            )
        port = self.nginx_tls_port
        return (
            ["--cacert", str(self.nginx_ca), "--resolve", f"{REGISTRY_NAME}:{port}:{HOST}"],
            f"https://{REGISTRY_NAME}:{port}{path}",
        )

    def manifest_get(self, system: str, ref: str | None = None) -> None:
        port = {"regcache": self.rc_port, "nginx": self.nginx_port, "distribution": self.dist_port}[
            system
        ]
        url = f"http://{HOST}:{port}/v2/{REPO}/manifests/{ref or self.manifest_digest}"
        curl_check(
            ["-H", f"Accept: {OCI_MANIFEST}", url], self.manifest_digest, f"{system} manifest"
        )

    def server(self, system: str) -> Server:
        return {"regcache": self.rc, "nginx": self.nginx, "distribution": self.dist}[system]

    def wanted(self, name: str) -> bool:
        only = self.args.only
        return not only or any(name.startswith(x) for x in only.split(","))

    # warm -----------------------------------------------------------------

    def warm_blob_plain(self) -> None:
        sc = Scenario(
            "warm-blob-plain",
            "MB/s",
            True,
            f"one client, one keep-alive connection, a {self.big_size // MIB} MiB "
            f"cached blob over plain HTTP, fetched {self.big_repeat} times per round",
        )
        systems = ["regcache", "nginx", "distribution"]
        for system in systems:
            curl_check([self.url(system, self.big)], self.big.digest, f"{system} {sc.name}")
        for round_ in range(self.rounds):
            for system in rotated(systems, round_):
                server = self.server(system)
                before = server.cpu_seconds()
                rows = curl_times([], self.url(system, self.big), self.big_repeat)
                cpu = server.cpu_seconds() - before
                total = sum(r[0] for r in rows)
                sc.add(system, total / sum(r[1] for r in rows) / MB, cpu / (total / GIB))
        self.scenarios.append(sc)

    def warm_blob_tls(self) -> None:
        sc = Scenario(
            "warm-blob-tls",
            "MB/s",
            True,
            f"one client, a {self.big_size // MIB} MiB cached blob over TLS: regcache "
            "through its CONNECT front end (minted ECDSA P-256 leaf), nginx over HTTPS "
            "with an ECDSA P-256 certificate; 4 fetches per round on one connection",
        )
        systems = ["regcache", "nginx"]
        for system in systems:
            args, url = self.tls_args(system, self.big)
            curl_check([*args, url], self.big.digest, f"{system} {sc.name}")
        for round_ in range(self.rounds):
            for system in rotated(systems, round_):
                server = self.server(system)
                args, url = self.tls_args(system, self.big)
                before = server.cpu_seconds()
                rows = curl_times(args, url, 4)
                cpu = server.cpu_seconds() - before
                total = sum(r[0] for r in rows)
                sc.add(system, total / sum(r[1] for r in rows) / MB, cpu / (total / GIB))
        self.scenarios.append(sc)

    def _fanout(self, sc: Scenario, systems: list[str], tls: bool, repeat: int) -> None:
        """16 curl processes at once, each fetching the blob ``repeat`` times on one connection."""
        clients = 16
        for system in systems:
            args, url = self.tls_args(system, self.fan) if tls else ([], self.url(system, self.fan))
            curl_check([*args, url], self.fan.digest, f"{system} {sc.name}")
        for round_ in range(self.rounds):
            for system in rotated(systems, round_):
                server = self.server(system)
                args, url = (
                    self.tls_args(system, self.fan) if tls else ([], self.url(system, self.fan))
                )
                argv = [*curl_base(), *args, "-w", "%{size_download}\\n"]
                for _ in range(repeat):
                    argv += [url, "-o", "/dev/null"]
                before = server.cpu_seconds()
                started = time.monotonic()
                procs = [
                    subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
                    for _ in range(clients)
                ]
                total = 0
                for proc in procs:
                    out, _ = proc.communicate(timeout=600)
                    if proc.returncode != 0:
                        raise RuntimeError(f"{system} {sc.name}: curl failed")
                    total += sum(int(x) for x in out.split())
                elapsed = time.monotonic() - started
                cpu = server.cpu_seconds() - before
                if total != clients * repeat * self.fan.size:
                    raise RuntimeError(f"{system} {sc.name}: short bodies ({total})")
                sc.add(system, total / elapsed / MB, cpu / (total / GIB))
        self.scenarios.append(sc)

    def warm_blob_fanout(self) -> None:
        repeat = 4 if self.quick else 8
        sc = Scenario(
            "warm-blob-fanout",
            "MB/s",
            True,
            f"16 concurrent curl clients, each fetching a {self.fan_size // MIB} MiB "
            f"cached blob {repeat} times on one keep-alive connection, plain HTTP; "
            "aggregate MB/s over the wall time (wrk is not used here: its 8 KiB reads "
            "make it the bottleneck)",
        )
        self._fanout(sc, ["regcache", "nginx", "distribution"], False, repeat)

    def warm_blob_fanout_tls(self) -> None:
        repeat = 2 if self.quick else 4
        sc = Scenario(
            "warm-blob-fanout-tls",
            "MB/s",
            True,
            f"16 concurrent curl clients, each fetching a {self.fan_size // MIB} MiB "
            f"cached blob {repeat} times on one TLS connection (regcache: through "
            "CONNECT); aggregate MB/s over the wall time",
        )
        self._fanout(sc, ["regcache", "nginx"], True, repeat)

    def warm_manifest(self) -> None:
        systems = ["regcache", "nginx", "distribution"]
        for system in systems:
            self.manifest_get(system)
            self.manifest_get(system, "latest")
        cases = [
            (
                "warm-manifest-get-digest",
                "GET",
                self.manifest_digest,
                "manifest GET by digest with an OCI Accept header, 16 keep-alive connections (wrk)",
            ),
            (
                "warm-manifest-head-tag",
                "HEAD",
                "latest",
                "manifest HEAD by tag (within regcache's tag_ttl), 16 keep-alive connections "
                "(benchmarks/headload.py, a Python client: wrk cannot do HEAD)",
            ),
        ]
        for name, method, ref, description in cases:
            sc = Scenario(name, "req/s", True, description)
            for round_ in range(self.rounds):
                for system in rotated(systems, round_):
                    port = {
                        "regcache": self.rc_port,
                        "nginx": self.nginx_port,
                        "distribution": self.dist_port,
                    }[system]
                    url = f"http://{HOST}:{port}/v2/{REPO}/manifests/{ref}"
                    server = self.server(system)
                    before = server.cpu_seconds()
                    if method == "HEAD":
                        fig = head_load(port, f"/v2/{REPO}/manifests/{ref}", 16, self.wrk_seconds)
                    else:
                        fig = wrk(url, 16, self.wrk_seconds, method, OCI_MANIFEST, work=self.work)
                    cpu = server.cpu_seconds() - before
                    sc.add(
                        system,
                        fig["requests"] / (fig["duration_us"] / 1e6),
                        p50_ms=fig["p50_us"] / 1000,
                        p99_ms=fig["p99_us"] / 1000,
                        cpu_ms_per_1k_requests=cpu * 1e6 / fig["requests"],
                    )
            self.scenarios.append(sc)

    # cold -----------------------------------------------------------------

    def _cold_system(
        self, system: str, tag: str, origin_port: int | None = None, tls: bool = False
    ) -> tuple[Server | None, int]:
        """A fresh cold cache for ``system``: (server or None for direct, port).

        ``origin_port``: where the upstream is reached (default: directly;
        the uplink scenarios pass the shaper's port); ``tls``: it speaks
        HTTPS with the bench CA's leaf.
        """
        origin_port = origin_port or self.origin_port
        if system == "direct":
            return None, origin_port
        ca_file = self.nginx_ca if tls else None
        if system == "regcache":
            name = f"regcache-cold-{tag}"
            shutil.rmtree(self.work / name, ignore_errors=True)
            server, port, _ = start_regcache(self.work, name, origin_port, ca_file)
            return server, port
        data = self.work / f"proxy-{tag}"
        shutil.rmtree(data, ignore_errors=True)
        server, port = start_registry(
            f"distribution-proxy-{tag}",
            self.work,
            data,
            SERVER_CPU,
            remote=f"{'https' if tls else 'http'}://{HOST}:{origin_port}",
            # Go reads extra roots from SSL_CERT_FILE.
            env={"SSL_CERT_FILE": str(ca_file)} if ca_file else None,
        )
        return server, port

    def _cold_done(self, server: Server | None, tag: str) -> None:
        if server is not None:
            server.stop()
        shutil.rmtree(self.work / f"regcache-cold-{tag}" / "data", ignore_errors=True)
        shutil.rmtree(self.work / f"proxy-{tag}", ignore_errors=True)

    def cold_blob(self) -> None:
        sc = Scenario(
            "cold-blob",
            "MB/s",
            True,
            f"one client pulls a {self.big_size // MIB} MiB blob that is not cached: "
            "through regcache from the upstream distribution (fresh data directory each "
            "round), directly from the upstream, and through distribution in proxy "
            "mode (fresh storage each round)",
        )
        ttfb = Scenario(
            "cold-blob-first-byte",
            "ms",
            False,
            "time to the first body byte of the cold pull above",
        )
        self._cold_pulls(sc, self.big, "", ttfb=ttfb)
        self.scenarios += [sc, ttfb]

    def _cold_pulls(
        self,
        sc: Scenario,
        blob: Blob,
        tag: str,
        origin_port: int | None = None,
        tls: bool = False,
        ttfb: Scenario | None = None,
    ) -> None:
        """One cold pull of ``blob`` per system and round: regcache, direct, distribution's proxy.

        Each system is checked once (untimed) first; MB/s and server CPU per
        GiB go to ``sc``, the time to the first byte to ``ttfb``.
        """
        systems = ["regcache", "direct", "distribution-proxy"]
        path = f"/v2/{REPO}/blobs/{blob.digest}"

        def curl_args(system: str, port: int) -> list[str]:
            if system == "direct" and tls:
                return ["--cacert", str(self.nginx_ca), f"https://{HOST}:{port}{path}"]
            return [f"http://{HOST}:{port}{path}"]

        for system in systems:  # checked, untimed
            server, port = self._cold_system(system, f"{tag}check", origin_port, tls)
            curl_check(curl_args(system, port), blob.digest, f"{system} {sc.name}")
            self._cold_done(server, f"{tag}check")
        for index in range(self.rounds):
            for system in rotated(systems, index):
                server, port = self._cold_system(system, f"{tag}{index}", origin_port, tls)
                try:
                    cpu_before = server.cpu_seconds() if server else 0.0
                    *args, url = curl_args(system, port)
                    ((size, total, first),) = curl_times(args, url, 1)
                    cpu = (server.cpu_seconds() - cpu_before) if server else None
                finally:
                    self._cold_done(server, f"{tag}{index}")
                sc.add(system, size / total / MB, None if cpu is None else cpu / (size / GIB))
                if ttfb is not None:
                    ttfb.add(system, first * 1000)

    def cold_blob_tls_upstream(self) -> None:
        """cold-blob with an HTTPS upstream, as every public registry is."""
        work = self.work
        origin, origin_port = start_registry(
            "origin-tls",
            work,
            self.origin_data,
            CLIENT_CPU,
            tls=(work / "nginx-cert.pem", work / "nginx-key.pem"),
        )
        sc = Scenario(
            "cold-blob-tls-upstream",
            "MB/s",
            True,
            f"cold-blob from an HTTPS upstream: one client pulls the uncached "
            f"{self.big_size // MIB} MiB blob, the upstream docker-registry serving the same "
            "storage over TLS (ECDSA P-256 leaf); directly means curl over HTTPS",
        )
        try:
            self._cold_pulls(sc, self.big, "tls", origin_port, tls=True)
        finally:
            origin.stop()
        self.scenarios.append(sc)

    def _origin_blob_bytes(self, offset: int, digest: str) -> int:
        text = (self.work / "origin.log").read_bytes()[offset:].decode(errors="replace")
        total = 0
        for line in text.splitlines():
            match = re.search(r'"GET (\S+) HTTP/[^"]*" (\d{3}) (\d+)', line)
            if match and match.group(1).startswith(f"/v2/{REPO}/blobs/{digest}"):
                total += int(match.group(3))
        return total

    def cold_fanout(self) -> None:
        blob, clients = self.cold_fan, self.cold_clients
        mib = blob.size // MIB
        upstream = Scenario(
            "cold-fanout-upstream-bytes",
            "x blob size",
            False,
            f"{clients} clients at once pull the same uncached {mib} MiB blob; "
            "bytes the upstream sent for it, over the blob size "
            "(from the upstream's access log)",
        )
        slowest = Scenario(
            "cold-fanout-slowest",
            "x single pull",
            False,
            f"the slowest of the {clients} clients' total time, over the time "
            f"of one cold pull of the same blob alone (same round, same system)",
        )
        aggregate = Scenario(
            "cold-fanout-aggregate",
            "MB/s",
            True,
            f"bytes delivered to the {clients} clients over the wall time",
        )
        memory = Scenario(
            "memory-peak-rss",
            "MiB",
            False,
            f"peak RSS (VmHWM) of the server process after the {clients}-client "
            "cold fan-out (fresh process each round)",
        )
        systems = ["regcache", "distribution-proxy"]
        url_path = f"/v2/{REPO}/blobs/{blob.digest}"
        for index in range(self.rounds):
            for system in rotated(systems, index):
                # One cold pull alone, for the ratio.
                server, port = self._cold_system(system, f"single{index}")
                try:
                    ((_, single, _),) = curl_times([], f"http://{HOST}:{port}{url_path}", 1)
                finally:
                    self._cold_done(server, f"single{index}")
                server, port = self._cold_system(system, f"fan{index}")
                assert server is not None
                try:
                    offset = (self.work / "origin.log").stat().st_size
                    times, wall = self._fan_out(
                        system, f"http://{HOST}:{port}{url_path}", blob, clients, index == 0
                    )
                    rss = server.peak_rss_mib()
                    # The registry logs a request after its response is sent.
                    time.sleep(0.5)
                    sent = self._origin_blob_bytes(offset, blob.digest)
                finally:
                    self._cold_done(server, f"fan{index}")
                upstream.add(system, sent / blob.size)
                slowest.add(system, max(times) / single)
                aggregate.add(system, clients * blob.size / wall / MB)
                memory.add(system, rss)
        self.scenarios += [upstream, slowest, aggregate, memory]

    def _fan_out(
        self, system: str, url: str, blob: Blob, clients: int, check: bool
    ) -> tuple[list[float], float]:
        """``clients`` curls at once for ``url``: (each one's seconds, wall seconds)."""
        fmt = "%{time_total} %{size_download} %{http_code}\\n"
        argv = [*curl_base(), "-w", fmt, url]
        started = time.monotonic()
        procs = []
        check_file = self.work / "fan-check.bin"
        for n in range(clients):
            out_args = ["-o", str(check_file) if n == 0 and check else "/dev/null"]
            procs.append(
                subprocess.Popen(
                    [*argv, *out_args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        times = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"{system} cold fan-out: curl: {err}")
            total, size, code = out.split()
            if code != "200" or int(size) != blob.size:
                raise RuntimeError(f"{system} cold fan-out: {code}, {size} bytes")
            times.append(float(total))
        wall = time.monotonic() - started
        if check:
            digest = "sha256:" + hashlib.sha256(check_file.read_bytes()).hexdigest()
            check_file.unlink()
            if digest != blob.digest:
                raise RuntimeError(f"{system} cold fan-out: bad body {digest}")
        return times, wall

    # a thin uplink ----------------------------------------------------------

    def cold_uplink(self) -> None:
        """Cold pulls when a shaped link, not the CPU, is the limit (see shaper.py)."""
        rate = UPLINK_MB_S * MB
        port = free_port()
        shaper = Server(
            "uplink",
            pin(
                CLIENT_CPU,
                [
                    sys.executable,
                    str(HERE / "shaper.py"),
                    str(port),
                    str(self.origin_port),
                    str(rate),
                ],
            ),
            self.work / "uplink.log",
        ).start()
        wait_http(port)
        try:
            self._cold_uplink_blob(port)
            self._cold_uplink_fanout(port)
        finally:
            shaper.stop()

    def _cold_uplink_blob(self, uplink_port: int) -> None:
        blob = self.cold_fan
        sc = Scenario(
            "cold-blob-uplink",
            "MB/s",
            True,
            f"cold-blob over a {UPLINK_MB_S} MB/s uplink: one client pulls the uncached "
            f"{blob.size // MIB} MiB blob, the upstream reached through a relay that carries "
            "its answers at that rate (benchmarks/shaper.py)",
        )
        self._cold_pulls(sc, blob, "up", uplink_port)
        self.scenarios.append(sc)

    def _cold_uplink_fanout(self, uplink_port: int) -> None:
        blob, clients = self.cold_fan, self.cold_clients
        slowest = Scenario(
            "cold-fanout-uplink-slowest",
            "x single pull",
            False,
            f"cold-fanout-slowest over the {UPLINK_MB_S} MB/s uplink: {clients} clients at "
            f"once pull the same uncached {blob.size // MIB} MiB blob; the slowest one's time "
            "over one cold pull alone through the same link (distribution's proxy: one round)",
        )
        url_path = f"/v2/{REPO}/blobs/{blob.digest}"
        for index in range(self.rounds):
            # distribution's proxy fetches nearly one copy per client through
            # the link (50 x the blob): one round of it keeps the run short.
            systems = (
                rotated(["regcache", "distribution-proxy"], index) if index == 0 else ["regcache"]
            )
            for system in systems:
                server, port = self._cold_system(system, f"upsingle{index}", uplink_port)
                try:
                    ((_, single, _),) = curl_times([], f"http://{HOST}:{port}{url_path}", 1)
                finally:
                    self._cold_done(server, f"upsingle{index}")
                server, port = self._cold_system(system, f"upfan{index}", uplink_port)
                try:
                    times, _ = self._fan_out(
                        system, f"http://{HOST}:{port}{url_path}", blob, clients, index == 0
                    )
                finally:
                    self._cold_done(server, f"upfan{index}")
                slowest.add(system, max(times) / single)
        self.scenarios.append(slowest)

    # adapters -------------------------------------------------------------

    def _origin_blob_gets(self, offset: int, digest: str) -> int:
        text = (self.work / "origin.log").read_bytes()[offset:].decode(errors="replace")
        return sum(
            1
            for line in text.splitlines()
            if re.search(rf'"GET /v2/{re.escape(REPO)}/blobs/{re.escape(digest)}[ ?]', line)
        )

    def adapters_warm_blob(self) -> None:
        sc = Scenario(
            "adapters-warm-blob",
            "MB/s",
            True,
            f"the cached {self.big_size // MIB} MiB blob of warm-blob-plain, one client, one "
            f"keep-alive connection, {self.big_repeat} fetches per round, plain HTTP: "
            "regcache's mirror front end, the ASGI adapter under uvicorn (asyncio, h11) "
            "and the WSGI adapter under gunicorn (gthread, one worker), all three over the "
            "same configuration and data directory",
        )
        config = self.work / "regcache-warm" / "regcache.toml"
        servers: dict[str, tuple[Server, int]] = {"regcache": (self.rc, self.rc_port)}
        try:
            for system in ("asgi-uvicorn", "wsgi-gunicorn"):
                servers[system] = start_adapter(self.work, system, config)
            path = f"/v2/{REPO}/blobs/{self.big.digest}"
            for system, (_, port) in servers.items():
                offset = (self.work / "origin.log").stat().st_size
                curl_check([f"http://{HOST}:{port}{path}"], self.big.digest, f"{system} {sc.name}")
                # The registry logs a request after its response is sent.
                time.sleep(0.5)
                if self._origin_blob_gets(offset, self.big.digest):
                    raise RuntimeError(f"{system} {sc.name}: the blob came from the upstream")
            systems = list(servers)
            for round_ in range(self.rounds):
                for system in rotated(systems, round_):
                    server, port = servers[system]
                    before = server.cpu_seconds()
                    rows = curl_times([], f"http://{HOST}:{port}{path}", self.big_repeat)
                    cpu = server.cpu_seconds() - before
                    total = sum(r[0] for r in rows)
                    sc.add(system, total / sum(r[1] for r in rows) / MB, cpu / (total / GIB))
        finally:
            for system, (server, _) in servers.items():
                if system != "regcache":
                    server.stop()
        self.scenarios.append(sc)

    # run ------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("warm-blob-plain", self.warm_blob_plain),
            ("warm-blob-tls", self.warm_blob_tls),
            ("warm-blob-fanout", self.warm_blob_fanout),
            ("warm-blob-fanout-tls", self.warm_blob_fanout_tls),
            ("warm-manifest", self.warm_manifest),
            ("cold-blob", self.cold_blob),
            ("cold-blob-tls-upstream", self.cold_blob_tls_upstream),
            ("cold-fanout", self.cold_fanout),
            ("cold-uplink", self.cold_uplink),
            ("adapters-warm-blob", self.adapters_warm_blob),
        ]
        for name, step in steps:
            if (
                self.wanted(name)
                or (name == "cold-fanout" and self.wanted("memory"))
                or (name == "cold-uplink" and self.wanted("cold-blob-uplink"))
                or (name == "cold-uplink" and self.wanted("cold-fanout-uplink"))
            ):
                log(f"{name}")
                started = time.monotonic()
                step()
                log(f"{name}: {time.monotonic() - started:.1f} s")

    def machine(self) -> dict[str, Any]:
        model = ""
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break

        def version(argv: list[str]) -> str:
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            except OSError:
                return ""
            return (
                (done.stdout + done.stderr).strip().splitlines()[0]
                if (done.stdout + done.stderr).strip()
                else ""
            )

        return {
            "cpu": model,
            "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "nginx": version([NGINX_BIN, "-v"]),
            "distribution": version([REGISTRY_BIN, "--version"]),
            "curl": version(["curl", "--version"]),
            "wrk": version(["wrk", "-v"]),
            "uvicorn": package_version("uvicorn"),
            "gunicorn": package_version("gunicorn"),
            "pinning": "servers on CPU 0, clients and the upstream on CPU 1"
            if MULTI_CPU
            else "none (one CPU)",
            "quick": self.quick,
            "rounds": self.rounds,
        }


def package_version(name: str) -> str:
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds, small blobs (~2 min)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per scenario (default 5)")
    parser.add_argument("--only", default="", help="comma-separated scenario name prefixes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--output", help="JSON to write (default results/latest.json; quick.json with --quick)"
    )
    args = parser.parse_args()
    if args.output is None:
        args.output = str(RESULTS / ("quick.json" if args.quick else "latest.json"))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    work = Path(tempfile.mkdtemp(prefix="regcache-bench-"))
    started = time.monotonic()
    bench = Bench(args, work)
    try:
        bench.run()
    except Exception:
        log(f"failed; logs are in {work}")
        args.keep = True
        raise
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": bench.machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - started, 1),
        "scenarios": [s.to_json() for s in bench.scenarios],
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    sys.path.insert(0, str(HERE))
    import render

    render.write_all(output, docs=output.resolve() == (RESULTS / "latest.json").resolve())
    log(f"done in {result['duration_s']} s: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
