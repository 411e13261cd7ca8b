"""The network front ends: the registry mirror (and the CONNECT proxy)."""

from ._main import main, serve
from ._mirror import MirrorApp
from ._server import FileBody, Reply, Request, StreamBody, serve_http

__all__ = ["FileBody", "MirrorApp", "Reply", "Request", "StreamBody", "main", "serve", "serve_http"]
