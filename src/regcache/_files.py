"""Reading the files a configuration names (config file, secrets, CA PEM)."""

from __future__ import annotations

from pathlib import Path

from .core import ConfigError


def read_configured_file(path: str, key_path: str) -> bytes:
    """The bytes of the file at ``path``; a ConfigError naming ``key_path`` if unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(key_path, f"cannot read {path}: {exc.strerror}") from exc
