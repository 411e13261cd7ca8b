"""gunicorn settings for the regcache WSGI app (``gunicorn -c gunicorn.conf.py wsgi_app:app``).

One worker process holds one engine (one cache writer, one fetch per blob);
threads carry the concurrent pulls. Long blob downloads need a long timeout.
"""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = 1
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
timeout = 600
# The engine thread must start after the fork, in the worker.
preload_app = False
# No control socket in the home directory (gunicorn 24 and later).
control_socket_disable = True


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the worker's engine: cancel in-flight fetches, close the index."""
    app = getattr(getattr(worker, "wsgi", None), "close", None)
    if app is not None:
        app()
