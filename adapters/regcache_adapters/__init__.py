"""ASGI and WSGI adapters: regcache's registry API inside another web server.

:func:`regcache_adapters.asgi.create_app` serves it from uvicorn, hypercorn
(trio or asyncio) or a FastAPI/Starlette mount;
:func:`regcache_adapters.wsgi.create_app` from gunicorn, waitress or any
WSGI server. Both are request translation only: routing, caching and client
authentication are the mirror's (:class:`regcache.Mirror`); the one extension
point is the ``auth`` hook (:data:`AuthHook`).
"""

from ._bridge import AuthHook

__all__ = ["AuthHook"]
