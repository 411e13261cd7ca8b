"""Configuration for the examples: the TOML file named by REGCACHE_CONFIG, if any,
with every key overridable by a ``REGCACHE_`` environment variable."""

from __future__ import annotations

import os
from pathlib import Path

from regcache.config import Config, load_config


def config_from_environment() -> Config:
    """The configuration, as ``python -m regcache.proxy`` would read it."""
    path = os.environ.get("REGCACHE_CONFIG")
    text = Path(path).read_text() if path else None
    return load_config(text, os.environ, source=path or "<environment>")
