"""The apps the adapter tests serve: the configuration from REGCACHE_CONFIG and
an auth hook that refuses requests by their credentials."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from regcache.config import load_config
from regcache.proxy import Request
from regcache_adapters import asgi, wsgi

USER = ("puller", "s3cret")


def check(request: Request) -> bool:
    """Only the test user gets in; a user named mallory is refused outright."""
    header = request.header("authorization") or ""
    if not header.startswith("Basic "):
        return False
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    if user == "mallory":
        raise PermissionError("mallory is banned")
    return (user, password) == USER


_config = load_config(Path(os.environ["REGCACHE_CONFIG"]).read_text(), {})
_auth = check if os.environ.get("ADAPTER_TEST_AUTH") else None

asgi_app = asgi.create_app(_config, auth=_auth)
wsgi_app = wsgi.create_app(_config, auth=_auth)
