"""regcache's configuration: one TOML file plus ``REGCACHE_`` environment overrides.

:func:`load_config` turns the file's text and the environment into a frozen
:class:`Config`; see :mod:`regcache.config._load` for the precedence rules,
the environment variable scheme and the error format, and
:func:`dump_defaults` for every key with its default and its variable.
Nothing here reads files or the process environment.
"""

from ._load import (
    ENV_PREFIX,
    RESERVED_ENVIRONMENT_VARIABLES,
    dump_config,
    dump_defaults,
    environment_name,
    load_config,
)
from ._model import (
    DEFAULT_REGISTRIES,
    LOG_LEVELS,
    CacheConfig,
    Config,
    ListenAddress,
    MirrorConfig,
    ProxyConfig,
    RegistryConfig,
    UpstreamConfig,
    registry_name_map,
)
from ._units import (
    host_pattern_matches,
    parse_duration,
    parse_size,
    redact_url,
    render_duration,
    render_size,
    url_host,
)

__all__ = [
    "DEFAULT_REGISTRIES",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "RESERVED_ENVIRONMENT_VARIABLES",
    "CacheConfig",
    "Config",
    "ListenAddress",
    "MirrorConfig",
    "ProxyConfig",
    "RegistryConfig",
    "UpstreamConfig",
    "dump_config",
    "dump_defaults",
    "environment_name",
    "host_pattern_matches",
    "load_config",
    "parse_duration",
    "parse_size",
    "redact_url",
    "registry_name_map",
    "render_duration",
    "render_size",
    "url_host",
]
