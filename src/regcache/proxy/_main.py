"""Start-up and shut-down of the servers: configuration, store, engine, listeners.

Command-line flags are applied as ``REGCACHE_`` overrides, so a flag, an
environment variable and a key in the file go through one parser and one set
of error messages.

Logs go to standard error, as text (``--log-format text``, the default) or
as one JSON object per line (``--log-format json``) with ``time``, ``level``,
``logger`` and ``message``, plus, for access lines, ``client``, ``method``,
``target``, ``registry``, ``status``, ``bytes``, ``cache`` and ``ms``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import trio

from regcache import __version__
from regcache._files import read_configured_file
from regcache.config import Config, ListenAddress, dump_config, load_config
from regcache.core import ConfigError, RegcacheError

from ._connect import ConnectProxy
from ._server import serve_http
from ._tls import ServerContexts, load_or_create_ca

log = logging.getLogger("regcache")

_FLAG_OVERRIDES = {
    "data_dir": "REGCACHE_DATA_DIR",
    "mirror_listen": "REGCACHE_MIRROR__LISTEN",
    "proxy_listen": "REGCACHE_PROXY__LISTEN",
    "log_level": "REGCACHE_LOG_LEVEL",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of ``python -m regcache.proxy``."""
    parser = argparse.ArgumentParser(
        prog="python -m regcache.proxy",
        description="A caching proxy for container images:"
        " one pull-through cache for every registry.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration file (default: $REGCACHE_CONFIG)"
    )
    parser.add_argument("--data-dir", help="where the cache lives (default ./regcache-data)")
    parser.add_argument(
        "--mirror-listen",
        metavar="HOST:PORT",
        help='mirror address (default 0.0.0.0:5000; "" disables)',
    )
    parser.add_argument(
        "--proxy-listen",
        metavar="HOST:PORT",
        help='CONNECT proxy address (default 0.0.0.0:3128; "" disables)',
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text lines (default) or one JSON object per line",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the configuration in effect (secrets redacted) and exit",
    )
    parser.add_argument("--version", action="version", version=f"regcache {__version__}")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Load the configuration: the file, then REGCACHE_ variables, then flags."""
    overrides = dict(environ)
    for attribute, variable in _FLAG_OVERRIDES.items():
        value = getattr(args, attribute)
        if value is not None:
            overrides[variable] = value
    path = args.config or environ.get("REGCACHE_CONFIG") or None
    text = None
    if path:
        text = read_configured_file(path, "").decode()
    return load_config(text, overrides, source=path or "<defaults>")


async def serve(
    config: Config, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the configured front ends until cancelled."""
    from regcache._library import Mirror  # the library builds on this package

    log.info(
        "regcache %s, data in %s, registries: %s",
        __version__,
        Path(config.data_dir).resolve(),
        ", ".join(sorted(config.registries)),
    )
    async with Mirror(config) as mirror, trio.open_nursery() as nursery:
        addresses: list[str] = []
        if config.mirror.listen is not None:

            async def handle_mirror(stream: trio.SocketStream) -> None:
                peer = stream.socket.getpeername()
                await serve_http(stream, mirror.handle, client=str(peer[0]))

            addresses += await _listen(nursery, "mirror", config.mirror.listen, handle_mirror)
        if config.proxy.listen is not None:
            authority = load_or_create_ca(config)
            scratch = Path(config.data_dir) / "ca"
            scratch.mkdir(mode=0o700, exist_ok=True)
            proxy = ConnectProxy(mirror.engine, config, ServerContexts(authority, scratch))
            addresses += await _listen(
                nursery, "CONNECT proxy", config.proxy.listen, proxy.handle_connection
            )
        task_status.started(addresses)


async def _listen(
    nursery: trio.Nursery,
    what: str,
    listen: ListenAddress,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> list[str]:
    listeners = await trio.open_tcp_listeners(listen.port, host=listen.host or None)
    addresses = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        addresses.append(address)
        log.info("%s listening on %s", what, address)
    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return addresses


async def _run_until_signalled(config: Config) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, config)
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m regcache.proxy``; returns the exit status."""
    args = parse_args(argv)
    try:
        config = build_config(args, os.environ)
    except ConfigError as exc:
        print(f"regcache: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    configure_logging(config.log_level, args.log_format)
    try:
        trio.run(_run_until_signalled, config)
    except (RegcacheError, OSError, ExceptionGroup) as exc:
        reason = _start_failure(exc)
        if reason is None:
            raise
        log.error("cannot run: %s", reason)  # noqa: TRY400 - the message says it all
        return 1
    return 0


TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes of a log record that JsonFormatter adds as fields.
_STRUCTURED_FIELDS = ("access",)


class JsonFormatter(logging.Formatter):
    """Formats a log record as one line of JSON.

    Fields: ``time`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger``,
    ``message``, the fields of a record's ``access`` mapping (the access log
    passes them in ``extra``), and ``exception`` with the traceback if any.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, object] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _STRUCTURED_FIELDS:
            fields = getattr(record, name, None)
            if isinstance(fields, dict):
                for key, value in fields.items():
                    entry.setdefault(str(key), value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a value json cannot encode must not lose the line.
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send logs to standard error at ``level``, as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        # Warnings become log records, so every line of the stream is JSON.
        logging.captureWarnings(True)
    else:
        handler.setFormatter(logging.Formatter(TEXT_LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _start_failure(exc: BaseException) -> BaseException | None:
    """The operator-facing error inside what trio raised, or None for a bug."""
    if isinstance(exc, RegcacheError | OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _start_failure(inner)
            if found is not None:
                return found
    return None
