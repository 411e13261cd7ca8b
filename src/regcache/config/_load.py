"""Reading the configuration: TOML text and ``REGCACHE_`` variables -> :class:`Config`.

The file is TOML 1.0 (parsed by :mod:`tomllib`) with the keys of DESIGN.md,
"Configuration (user-facing contract)"; cattrs structures it into the frozen
classes of the model. Nothing here reads a file or the process environment:
the caller passes the file's text (or None when there is no file) and a
mapping of environment variables (normally ``os.environ``).

Precedence
    built-in defaults < the TOML file < ``REGCACHE_`` environment variables.
    A ``[registries."<name>"]`` table for a built-in registry merges over it
    (keys given override, the rest, ``url`` included, keep their defaults); a
    table for any other name adds a registry and must give ``url``.
    ``enabled = false`` removes a registry, built-in or not.

Environment variables
    Every key can be set by a variable named ``REGCACHE_`` followed by the
    key's path in upper case, with ``__`` (two underscores) between path
    segments; a single ``_`` stays part of a key name::

        data_dir                              REGCACHE_DATA_DIR
        log_level                             REGCACHE_LOG_LEVEL
        mirror.listen                         REGCACHE_MIRROR__LISTEN
        cache.max_size                        REGCACHE_CACHE__MAX_SIZE
        proxy.tunnel                          REGCACHE_PROXY__TUNNEL
        registries."docker.io".username       REGCACHE_REGISTRIES__DOCKER_IO__USERNAME

    The registry segment is the registry's name in upper case with every
    character other than a letter or digit replaced by ``_``. It must match a
    registry that is already configured (built in, or named in the file): a
    variable cannot create a registry. Values are written as in TOML but
    without quotes: durations (``30s``) and sizes (``100GiB``) as text; an
    empty value disables a listener; booleans are ``true``/``false``,
    ``1``/``0`` or ``yes``/``no``; lists are comma-separated
    (``REGCACHE_PROXY__TUNNEL=*.corp.example,git.example:443``); user tables
    are comma-separated ``name=hash`` pairs and replace the table. A variable
    that starts with ``REGCACHE_`` and names no key is an error, so a typo is
    not silently ignored; only ``REGCACHE_CONFIG`` (the configuration file's
    path, which the caller reads) is set aside.

Errors
    Every refusal is a :class:`~regcache.core.ConfigError` whose ``key_path``
    names the key TOML-style (``registries."docker.io".url``,
    ``proxy.tunnel[2]``), or the variable for an environment variable that
    names no key; a value that came from the environment says so in the
    reason. A TOML syntax error has an empty key path and a reason of the form
    ``<source>: line N: ...``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from regcache.core._errors import ConfigError

from ._model import (
    DEFAULT_REGISTRIES,
    HIDE,
    HIDE_MAP_VALUES,
    HIDE_URL_USERINFO,
    HIDE_VALUE,
    KIND,
    KIND_DURATION,
    KIND_LISTEN,
    KIND_SIZE,
    LISTEN_EXPECTED,
    CacheConfig,
    Config,
    ListenAddress,
    MirrorConfig,
    ProxyConfig,
    RegistryConfig,
    UpstreamConfig,
    field_help,
    registry_name_map,
)
from ._units import (
    DURATION_EXPECTED,
    SIZE_EXPECTED,
    describe_value,
    duration_from_number,
    join_key_path,
    parse_duration,
    parse_size,
    quote_key,
    redact_url,
    render_duration,
    render_size,
    size_from_number,
    toml_string,
)

ENV_PREFIX = "REGCACHE_"
# Variables with the prefix that are not configuration keys.
RESERVED_ENVIRONMENT_VARIABLES = frozenset({"REGCACHE_CONFIG"})

# A configuration file is a few kilobytes; the cap keeps a wrong file (a
# disk image passed as --config) from being parsed into memory at all.
MAX_CONFIG_TEXT_LENGTH = 1024 * 1024

_SECTIONS: dict[str, type[Any]] = {
    "mirror": MirrorConfig,
    "proxy": ProxyConfig,
    "upstream": UpstreamConfig,
    "cache": CacheConfig,
}
_TABLE_CLASSES: tuple[type[Any], ...] = (*_SECTIONS.values(), RegistryConfig, Config)
for _cls in _TABLE_CLASSES:
    attrs.resolve_types(_cls)

_STR_TUPLE: Any = tuple[str, ...]
_STR_MAP: Any = Mapping[str, str]
_REGISTRY_MAP: Any = Mapping[str, RegistryConfig]
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_TOML_POSITION_RE = re.compile(r" \((?:at line (\d+), column (\d+)|at end of document)\)$")


# -- hooks: one per value shape, each strict about the TOML type it accepts --


def _structure_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise ConfigError("", f"expected a string, got {describe_value(value)}")
    return value


def _structure_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("", f"expected a boolean, got {describe_value(value)}")
    return value


def _structure_str_tuple(value: object, _: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError("", f"expected an array of strings, got {describe_value(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"[{index}]", f"expected a string, got {describe_value(item)}")
    return tuple(value)


def _structure_str_map(value: object, _: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError("", f"expected a table, got {describe_value(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(quote_key(key), f"expected a string, got {describe_value(item)}")
    return dict(value)


def _structure_duration(value: object, _: object) -> float:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return duration_from_number(value)
    raise ConfigError("", f"{DURATION_EXPECTED}, got {describe_value(value)}")


def _structure_size(value: object, _: object) -> int:
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return size_from_number(value)
    raise ConfigError("", f"{SIZE_EXPECTED}, got {describe_value(value)}")


def _structure_listen(value: object, _: object) -> ListenAddress | None:
    if not isinstance(value, str):
        raise ConfigError("", f"{LISTEN_EXPECTED}, got {describe_value(value)}")
    return ListenAddress.parse(value) if value else None


_KIND_HOOKS: dict[str, Callable[[object, object], object]] = {
    KIND_DURATION: _structure_duration,
    KIND_SIZE: _structure_size,
    KIND_LISTEN: _structure_listen,
}


def _table_hook(
    cls: type[Any], structure: Callable[[Mapping[str, Any], Any], Any]
) -> Callable[[object, object], Any]:
    def structure_table(value: object, _: object) -> Any:
        if not isinstance(value, dict):
            raise ConfigError("", f"expected a table, got {describe_value(value)}")
        return structure(value, cls)

    return structure_table


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook_func(lambda t: t == _STR_TUPLE, _structure_str_tuple)
    converter.register_structure_hook_func(lambda t: t == _STR_MAP, _structure_str_map)

    def structure_registries(value: object, _: object) -> dict[str, RegistryConfig]:
        if not isinstance(value, dict):
            raise ConfigError("", f"expected a table, got {describe_value(value)}")
        registries = {}
        for name, table in value.items():
            try:
                registries[name] = converter.structure(table, RegistryConfig)
            except Exception as exc:
                error = _translate(exc)
                raise ConfigError(
                    join_key_path(quote_key(name), error.key_path), error.reason
                ) from exc
        return registries

    converter.register_structure_hook_func(lambda t: t == _REGISTRY_MAP, structure_registries)
    # Nested tables first: a class's structuring function looks up the
    # hooks of its fields when it is made.
    for cls in _TABLE_CLASSES:
        overrides: dict[str, Any] = {
            field.name: override(struct_hook=_KIND_HOOKS[field.metadata[KIND]])
            for field in attrs.fields(cls)
            if KIND in field.metadata
        }
        structure = make_dict_structure_fn(cls, converter, **overrides)
        converter.register_structure_hook(cls, _table_hook(cls, structure))
    return converter


# -- translating cattrs' exception groups into one ConfigError with a path --


def _note_segment(exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return quote_key(note.name)
        if isinstance(note, IterableValidationNote):
            index = note.index
            return f"[{index}]" if isinstance(index, int) else quote_key(str(index))
    return ""


def _unknown_key(cls: type[Any], key: str) -> ConfigError:
    known = [field.name for field in attrs.fields(cls)]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
    return ConfigError(quote_key(key), f"unknown key ({hint})")


def _translate(exc: BaseException) -> ConfigError:
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, ForbiddenExtraKeysError):
        return _unknown_key(exc.cl, sorted(map(str, exc.extra_fields))[0])
    if isinstance(exc, BaseValidationError):
        # An unknown key is usually the cause of the other errors in its
        # table (a misspelt key leaves the real one missing): report it first.
        inner_exc = sorted(
            exc.exceptions, key=lambda e: not isinstance(e, ForbiddenExtraKeysError)
        )[0]
        inner = _translate(inner_exc)
        return ConfigError(join_key_path(_note_segment(inner_exc), inner.key_path), inner.reason)
    if isinstance(exc, KeyError):
        return ConfigError("", "required key is missing")
    return ConfigError("", f"invalid value ({type(exc).__name__}: {exc})")


_CONVERTER = _make_converter()


# -- the TOML file --


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    if len(text) > MAX_CONFIG_TEXT_LENGTH:
        raise ConfigError("", f"{source}: longer than {MAX_CONFIG_TEXT_LENGTH} characters")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION_RE.search(message)
        what = message[: match.start()] if match else message
        if match is None or match[1] is None:
            line, where = text.count("\n") + 1, "at end of document"
        else:
            line, where = int(match[1]), f"column {match[2]}"
        raise ConfigError("", f"{source}: line {line}: {what} ({where})") from None
    except RecursionError:
        raise ConfigError("", f"{source}: arrays or tables nested too deeply") from None


def _registry_table(registry: RegistryConfig) -> dict[str, Any]:
    table = {}
    for field in attrs.fields(RegistryConfig):
        value = getattr(registry, field.name)
        table[field.name] = list(value) if isinstance(value, tuple) else value
    return table


def _merge_registries(raw: dict[str, Any]) -> None:
    tables = raw.get("registries", {})
    if not isinstance(tables, dict):
        raise ConfigError("registries", f"expected a table, got {describe_value(tables)}")
    merged = {name: _registry_table(reg) for name, reg in DEFAULT_REGISTRIES.items()}
    spelt: dict[str, str] = {}
    for name, table in tables.items():
        canonical = name.lower()
        path = join_key_path("registries", quote_key(name))
        if canonical in spelt:
            raise ConfigError(
                path,
                f"is registry {describe_value(spelt[canonical])} again"
                " (registry names are not case-sensitive)",
            )
        spelt[canonical] = name
        if not isinstance(table, dict):
            raise ConfigError(path, f"expected a table, got {describe_value(table)}")
        merged[canonical] = {**merged.get(canonical, {}), **table}
    raw["registries"] = merged


# -- the environment --


def environment_name(*keys: str) -> str:
    """The variable that overrides a key: ``("cache", "max_size")`` -> ``REGCACHE_CACHE__MAX_SIZE``.

    For a registry key pass the registry's name as the middle key:
    ``("registries", "docker.io", "username")``.
    """
    return ENV_PREFIX + "__".join(re.sub(r"[^A-Z0-9]", "_", key.upper()) for key in keys)


def _environment_key(
    cls: type[Any], segment: str, variable: str, table_keys: tuple[str, ...]
) -> attrs.Attribute[Any]:
    fields = attrs.fields_dict(cls)
    name = segment.lower()
    if "__" not in segment and name in fields:
        return fields[name]
    close = difflib.get_close_matches(name, list(fields), n=1)
    hint = f" (did you mean {environment_name(*table_keys, close[0])}?)" if close else ""
    table = ".".join(quote_key(key) for key in table_keys) or "the top level"
    raise ConfigError(
        variable, f"unknown environment variable: {table} has no key {describe_value(name)}{hint}"
    )


def _environment_value(field: attrs.Attribute[Any], text: str, variable: str, path: str) -> Any:
    if field.type is bool:
        flag = _BOOLEANS.get(text.strip().lower())
        if flag is None:
            raise ConfigError(
                path,
                f"expected a boolean (true, false, 1, 0, yes, no), got {describe_value(text)}"
                f" (from {variable})",
            )
        return flag
    if field.type == _STR_TUPLE:
        return [item.strip() for item in text.split(",") if item.strip()]
    if field.type == _STR_MAP:
        pairs = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, equals, value = item.partition("=")
            if not equals:
                raise ConfigError(
                    path, f"expected name=hash pairs separated by commas (from {variable})"
                )
            pairs[name.strip()] = value.strip()
        return pairs
    return text


def _registry_for(segment: str, registries: Mapping[str, Any], variable: str) -> str:
    matches = [
        name for name in registries if environment_name(name) == ENV_PREFIX + segment.upper()
    ]
    if len(matches) > 1:
        raise ConfigError(
            variable,
            f"matches registries {describe_value(matches[0])} and {describe_value(matches[1])}",
        )
    if not matches:
        known = ", ".join(environment_name(name)[len(ENV_PREFIX) :] for name in registries)
        raise ConfigError(
            variable,
            f"unknown environment variable: no configured registry is {segment}"
            f" (a variable cannot add a registry; configured: {known or 'none'})",
        )
    return matches[0]


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Write each ``REGCACHE_`` variable into ``raw``; return key path -> variable."""
    origins: dict[str, str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in RESERVED_ENVIRONMENT_VARIABLES:
            continue
        text = environ[variable]
        rest = variable[len(ENV_PREFIX) :]
        head, sep, tail = rest.partition("__")
        section = head.lower()
        if section == "registries":
            segment, sep2, key = tail.rpartition("__")
            if not (sep and sep2 and segment):
                raise ConfigError(
                    variable,
                    "expected REGCACHE_REGISTRIES__<REGISTRY>__<KEY>, e.g. "
                    + environment_name("registries", "docker.io", "username"),
                )
            name = _registry_for(segment, raw["registries"], variable)
            field = _environment_key(RegistryConfig, key, variable, ("registries", name))
            table = raw["registries"][name]
            path = join_key_path(join_key_path("registries", quote_key(name)), field.name)
        elif section in _SECTIONS:
            if not sep:
                raise ConfigError(
                    variable,
                    f"{section} is a table: set one of its keys, e.g."
                    f" {environment_name(section, attrs.fields(_SECTIONS[section])[0].name)}",
                )
            field = _environment_key(_SECTIONS[section], tail, variable, (section,))
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(section, f"expected a table, got {describe_value(table)}")
            path = join_key_path(section, field.name)
        else:
            field = _environment_key(Config, rest, variable, ())
            if field.name == "registries":
                raise ConfigError(variable, "registries is a table of tables: set a registry's key")
            table, path = raw, field.name
        table[field.name] = _environment_value(field, text, variable, path)
        origins[path] = variable
    return origins


def _with_origin(error: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    for path, variable in origins.items():
        if error.key_path == path or error.key_path.startswith((path + ".", path + "[")):
            return ConfigError(error.key_path, f"{error.reason} (from {variable})")
    return error


# -- the entry points --


def load_config(
    toml_text: str | None, environ: Mapping[str, str], *, source: str = "<config>"
) -> Config:
    """Build the configuration from a TOML file's text and the environment.

    ``toml_text`` is None when there is no file; ``environ`` is normally
    ``os.environ``; ``source`` names the file in syntax errors. The default
    registry is stored under its canonical name. Raises ConfigError.
    """
    raw = {} if toml_text is None else _parse_toml(toml_text, source)
    _merge_registries(raw)
    origins = _apply_environment(raw, environ)
    try:
        config: Config = _CONVERTER.structure(raw, Config)
    except Exception as exc:
        raise _with_origin(_translate(exc), origins) from exc
    default = registry_name_map(config)[config.mirror.default_registry]
    if default != config.mirror.default_registry:
        config = attrs.evolve(config, mirror=attrs.evolve(config.mirror, default_registry=default))
    return config


def _render_value(field: attrs.Attribute[Any], value: Any, redact: bool) -> str:
    kind = field.metadata.get(KIND)
    hidden = field.metadata.get(HIDE) if redact else None
    if kind == KIND_DURATION:
        return toml_string(render_duration(value))
    if kind == KIND_SIZE:
        return toml_string(render_size(value))
    if kind == KIND_LISTEN:
        return toml_string("" if value is None else str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return repr(value)
    if isinstance(value, str):
        if hidden == HIDE_VALUE and value:
            value = "***"
        elif hidden == HIDE_URL_USERINFO:
            value = redact_url(value)
        return toml_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_string(item) for item in value) + "]"
    items = [
        f"{quote_key(key)} = {toml_string('***' if hidden == HIDE_MAP_VALUES else item)}"
        for key, item in value.items()
    ]
    return "{ " + ", ".join(items) + " }" if items else "{}"


def _render_table(lines: list[str], cls: type[Any], obj: Any, redact: bool, *path: str) -> None:
    for field in attrs.fields(cls):
        if cls is Config and (field.name in _SECTIONS or field.name == "registries"):
            continue
        lines.append(f"# {field_help(cls, field.name)}  [{environment_name(*path, field.name)}]")
        lines.append(f"{field.name} = {_render_value(field, getattr(obj, field.name), redact)}")


def dump_config(config: Config, *, redact: bool = True) -> str:
    """Render a configuration as commented TOML that :func:`load_config` reads back.

    With ``redact`` (the default) passwords, password hashes and proxy
    passwords are shown as ``***``: the text is for reading, not loading.
    """
    lines = [
        "# regcache configuration. Each key's environment variable is in [brackets].",
    ]
    if redact:
        lines.append("# Secrets are shown as ***.")
    _render_table(lines, Config, config, redact)
    for section, cls in _SECTIONS.items():
        lines += ["", f"[{section}]"]
        _render_table(lines, cls, getattr(config, section), redact, section)
    lines += ["", '# Keys of a [registries."<name>"] table:']
    for field in attrs.fields(RegistryConfig):
        lines.append(f"#   {field.name}: {field_help(RegistryConfig, field.name)}")
    fields = attrs.fields(RegistryConfig)
    for name, registry in config.registries.items():
        base = DEFAULT_REGISTRIES.get(name)
        lines += ["", f"[registries.{quote_key(name)}]"]
        for field in fields:
            value = getattr(registry, field.name)
            if (
                field.name == "url"
                or (field.name == "aliases" and value)
                or value != (getattr(base, field.name) if base else field.default)
            ):
                lines.append(f"{field.name} = {_render_value(field, value, redact)}")
    for name in [name for name in DEFAULT_REGISTRIES if name not in config.registries]:
        lines += ["", f"[registries.{quote_key(name)}]", "enabled = false"]
    return "\n".join(lines) + "\n"


def dump_defaults() -> str:
    """The default configuration as commented TOML (for docs and ``--print-config``)."""
    return dump_config(Config(), redact=False)
