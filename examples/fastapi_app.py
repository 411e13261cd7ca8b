"""A FastAPI service with a regcache mirror mounted at /registry.

Run: ``uvicorn fastapi_app:app`` (from this directory). Clients reach the
registry API at ``http://HOST:8000/registry/v2/...``: containerd with
``override_path = true`` (see docs/embedding.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from _config import config_from_environment
from fastapi import FastAPI

from regcache_adapters.asgi import create_app

registry = create_app(config_from_environment())


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Mounted apps get no lifespan events of their own: run the mirror here.
    async with registry.running():
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/registry", registry)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """The host application's own routes live beside the mirror."""
    return {"status": "ok"}
