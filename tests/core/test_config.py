"""Tests for regcache.config: TOML + environment -> Config, and the value syntaxes."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import regcache.config
from regcache.config import (
    DEFAULT_REGISTRIES,
    CacheConfig,
    Config,
    ListenAddress,
    MirrorConfig,
    ProxyConfig,
    RegistryConfig,
    UpstreamConfig,
    dump_config,
    dump_defaults,
    environment_name,
    host_pattern_matches,
    load_config,
    parse_duration,
    parse_size,
    redact_url,
    registry_name_map,
    render_duration,
    render_size,
    url_host,
)
from regcache.core import ConfigError

GiB = 1024**3
CENTURY = 100 * 365 * 86400
HASH = "pbkdf2-sha256$600000$c2FsdHNhbHQ=$" + "A" * 43 + "="

# The example of DESIGN.md, "Configuration (user-facing contract)", verbatim.
DESIGN_EXAMPLE = """\
data_dir = "/var/lib/regcache"

[mirror]
listen = "0.0.0.0:5000"          # "" disables the mirror front end
default_registry = "docker.io"
allow_unknown_registries = false # ns= naming an unconfigured registry is refused
users = {}                       # name = "<password hash>": Basic auth for mirror clients

[proxy]
listen = "0.0.0.0:3128"          # "" disables the CONNECT front end
tunnel = []                      # host patterns passed through uninspected;
                                 # any other non-registry CONNECT is refused
ca_cert = ""                     # default: made on first start in data_dir/ca
ca_key = ""
users = {}                       # name = "<password hash>": Proxy-Authorization users

[upstream]
proxy = ""                       # egress proxy for the upstream leg
ca_file = ""                     # extra CA bundle trusted for every upstream
timeout = "30s"

[cache]
max_size = "100GiB"
tag_ttl = "5m"                   # tags are revalidated with HEAD after this
stale_if_error = "24h"

[registries."docker.io"]
url = "https://registry-1.docker.io"
aliases = ["dockerhub"]
username = "me"
password_file = "/run/secrets/hub"   # or password = "\u2026"
ca_file = ""                         # extra CA for this upstream
mirrors = []                         # upstreams tried before url, in order
proxy = ""                           # egress proxy for this registry only
"""


def error_of(toml_text: str | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(toml_text, environ or {})
    error = info.value
    assert str(error) == (f"{error.key_path}: {error.reason}" if error.key_path else error.reason)
    return str(error)


# -- defaults and the documented example --


def test_defaults_without_a_file() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert config.data_dir == "./regcache-data"
    assert config.log_level == "info"
    assert config.mirror.listen == ListenAddress("0.0.0.0", 5000)
    assert config.mirror.default_registry == "docker.io"
    assert config.mirror.allow_unknown_registries is False
    assert dict(config.mirror.users) == {}
    assert config.proxy.listen == ListenAddress("0.0.0.0", 3128)
    assert config.proxy.tunnel == ()
    assert (config.proxy.ca_cert, config.proxy.ca_key) == ("", "")
    assert (config.upstream.proxy, config.upstream.ca_file) == ("", "")
    assert (config.upstream.timeout, config.upstream.connect_timeout) == (30.0, 10.0)
    assert config.cache.max_size == 100 * GiB
    assert config.cache.tag_ttl == 300.0
    assert config.cache.stale_if_error == 86400.0
    assert config.cache.access_ttl == 600.0
    assert list(config.registries) == [
        "docker.io",
        "registry.k8s.io",
        "gcr.io",
        "quay.io",
        "ghcr.io",
        "mcr.microsoft.com",
        "public.ecr.aws",
    ]
    hub = config.registries["docker.io"]
    assert hub.url == "https://registry-1.docker.io"
    assert hub.aliases == ("dockerhub", "index.docker.io", "registry-1.docker.io")
    assert config.registries["registry.k8s.io"].aliases == ("k8s.gcr.io",)
    for name, registry in config.registries.items():
        assert (registry.username, registry.password, registry.password_file) == ("", "", "")
        if name not in ("docker.io",):
            assert registry.url == f"https://{name}"
    assert config.registries == DEFAULT_REGISTRIES


def test_the_design_example_loads() -> None:
    config = load_config(DESIGN_EXAMPLE, {}, source="regcache.toml")
    assert config.data_dir == "/var/lib/regcache"
    assert config.mirror.listen == ListenAddress("0.0.0.0", 5000)
    assert config.proxy.listen == ListenAddress("0.0.0.0", 3128)
    assert config.upstream.timeout == 30.0
    assert config.cache.max_size == 100 * GiB
    assert config.cache.tag_ttl == 300.0
    assert config.cache.stale_if_error == 86400.0
    hub = config.registries["docker.io"]
    assert hub.url == "https://registry-1.docker.io"
    assert hub.aliases == ("dockerhub",)
    assert hub.username == "me"
    assert hub.password_file == "/run/secrets/hub"
    assert hub.password == ""
    # The other built-in registries are still there.
    assert set(config.registries) == set(DEFAULT_REGISTRIES)


def test_a_registry_table_merges_over_a_built_in_one() -> None:
    config = load_config(
        '[registries."docker.io"]\nusername = "me"\npassword = "s3cret"\n'
        '[registries."Quay.io"]\nenabled = false\n'
        '[registries."harbor.corp.example:8443"]\nurl = "https://harbor.corp.example:8443/"\n'
        'aliases = ["Harbor"]\nmirrors = ["http://10.0.0.5:5000"]\n',
        {},
    )
    hub = config.registries["docker.io"]
    assert hub.url == DEFAULT_REGISTRIES["docker.io"].url
    assert hub.aliases == DEFAULT_REGISTRIES["docker.io"].aliases
    assert (hub.username, hub.password) == ("me", "s3cret")
    assert "quay.io" not in config.registries
    harbor = config.registries["harbor.corp.example:8443"]
    assert harbor.url == "https://harbor.corp.example:8443"
    assert harbor.aliases == ("harbor",)
    assert harbor.mirrors == ("http://10.0.0.5:5000",)
    assert harbor.enabled


def test_a_new_registry_needs_a_url() -> None:
    assert error_of('[registries."example.com"]\naliases = ["ex"]') == (
        'registries."example.com".url: required key is missing'
    )


def test_default_registry_may_be_an_alias_and_is_stored_canonical() -> None:
    config = load_config('[mirror]\ndefault_registry = "DockerHub"', {})
    assert config.mirror.default_registry == "docker.io"
    config = load_config('[mirror]\ndefault_registry = "k8s.gcr.io"', {})
    assert config.mirror.default_registry == "registry.k8s.io"


def test_disabling_the_default_registry_needs_another_default() -> None:
    text = '[registries."docker.io"]\nenabled = false\n'
    assert error_of(text).startswith(
        'mirror.default_registry: "docker.io" is not a configured registry or alias'
    )
    config = load_config(text + '[mirror]\ndefault_registry = "ghcr.io"\n', {})
    assert config.mirror.default_registry == "ghcr.io"
    assert "docker.io" not in config.registries


# -- error messages name the key path --


@pytest.mark.parametrize(
    ("toml_text", "message"),
    [
        (
            '[registries."docker.io"]\nurl = "registry-1.docker.io"',
            'registries."docker.io".url: must be an https or http URL',
        ),
        (
            '[registries."docker.io"]\nurl = "ftp://registry-1.docker.io"',
            'registries."docker.io".url: must be an https or http URL',
        ),
        (
            '[registries."docker.io"]\nurl = "https://user:pw@registry-1.docker.io"',
            'registries."docker.io".url: must be an https or http URL without credentials'
            " (set username and password instead)",
        ),
        (
            '[registries."docker.io"]\nmirrors = ["https://ok.example", "nope"]',
            'registries."docker.io".mirrors[1]: must be an https or http URL',
        ),
        ("[cache]\nmax_sise = 1", "cache.max_sise: unknown key (did you mean max_size?)"),
        ("[mirorr]\nlisten = ''", "mirorr: unknown key (did you mean mirror?)"),
        (
            '[registries."x.io"]\nulr = "https://x.io"',
            'registries."x.io".ulr: unknown key (did you mean url?)',
        ),
        (
            '[mirror]\nallow_unknown_registries = "yes"',
            'mirror.allow_unknown_registries: expected a boolean, got "yes"',
        ),
        ("data_dir = 5", "data_dir: expected a string, got 5"),
        (
            "[proxy]\ntunnel = 'a.example'",
            'proxy.tunnel: expected an array of strings, got "a.example"',
        ),
        ("[proxy]\ntunnel = ['a.example', 7]", "proxy.tunnel[1]: expected a string, got 7"),
        ("[proxy]\ntunnel = ['bad host']", 'proxy.tunnel[0]: "bad host" is not a valid host name'),
        ("mirror = 5", "mirror: expected a table, got 5"),
        ("registries = []", "registries: expected a table, got an array"),
        (
            '[registries."docker.io"]\nusername = "me"\npassword = "a"\npassword_file = "/x"',
            'registries."docker.io".password_file:'
            " password and password_file are mutually exclusive",
        ),
        (
            '[registries."docker.io"]\nusername = "me"',
            'registries."docker.io".username: needs password or password_file',
        ),
        (
            '[registries."docker.io"]\npassword = "pw"',
            'registries."docker.io".password: needs username',
        ),
        (
            "[cache]\ntag_ttl = '5 minutes'",
            'cache.tag_ttl: expected a duration such as 30s, 5m, 24h, got "5 minutes"',
        ),
        (
            "[cache]\ntag_ttl = -5",
            "cache.tag_ttl: expected a duration such as 30s, 5m, 24h, got -5",
        ),
        (
            "[upstream]\ntimeout = '-1s'",
            'upstream.timeout: expected a duration such as 30s, 5m, 24h, got "-1s"',
        ),
        ("[upstream]\ntimeout = 0", "upstream.timeout: must be more than zero, got 0.0"),
        (
            "[cache]\nmax_size = 'lots'",
            'cache.max_size: expected a size such as 100GiB, 512MiB or 10GB, got "lots"',
        ),
        (
            "[mirror]\nlisten = 'localhost'",
            "mirror.listen: expected a listen address such as 0.0.0.0:5000, :5000 or [::]:5000,"
            ' got "localhost" (no port)',
        ),
        (
            "[proxy]\nlisten = '0.0.0.0:65536'",
            "proxy.listen: expected a listen address such as 0.0.0.0:5000, :5000 or [::]:5000:"
            ' port "65536" is not in 0..65535',
        ),
        (
            "[mirror]\nusers = { alice = 'plain' }",
            "mirror.users.alice: a password hash must look like pbkdf2-sha256$<n>$<salt>$<hash>",
        ),
        (
            '[proxy]\nusers = { "a:b" = "' + HASH + '" }',
            "proxy.users.\"a:b\": a user name must be non-empty, printable and without ':'",
        ),
        ("[proxy]\nca_cert = '/ca.pem'", "proxy.ca_key: must be set together with ca_cert"),
        (
            "[upstream]\nproxy = 'socks5://gw:1080'",
            "upstream.proxy: must be an http or https proxy URL such as http://proxy.example:3128",
        ),
        (
            "log_level = 'loud'",
            'log_level: expected one of debug, info, warning, error, got "loud"',
        ),
        (
            "[mirror]\nlisten = ':5000'\n[proxy]\nlisten = '127.0.0.1:5000'",
            "proxy.listen: 127.0.0.1:5000 overlaps mirror.listen (:5000)",
        ),
        (
            '[registries."mirror.example"]\nurl = "https://mirror.example"\n'
            'aliases = ["dockerhub"]',
            "registries.\"mirror.example\".aliases: 'dockerhub' already names the registry"
            " 'docker.io', not 'mirror.example'",
        ),
        (
            '[registries."hub.example"]\nurl = "https://registry-1.docker.io:443/"',
            "registries.\"hub.example\".url: 'registry-1.docker.io' already names the registry"
            " 'docker.io', not 'hub.example'",
        ),
        (
            '[registries."GHCR.io"]\n[registries."ghcr.io"]',
            'registries."ghcr.io": is registry "GHCR.io" again (registry names are not'
            " case-sensitive)",
        ),
        (
            '[registries."not a host"]\nurl = "https://x.example"',
            'registries."not a host": "not a host" is not a valid host name',
        ),
    ],
)
def test_errors_name_the_key_path(toml_text: str, message: str) -> None:
    assert error_of(toml_text) == message


def test_a_syntax_error_names_the_source_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config('data_dir = "/x"\n[mirror]\nlisten = \n', {}, source="/etc/regcache.toml")
    assert info.value.key_path == ""
    assert info.value.reason.startswith("/etc/regcache.toml: line 3: Invalid value")
    with pytest.raises(ConfigError) as info:
        load_config("a = " + "[" * 5000, {})
    assert info.value.reason.startswith("<config>: ")


# -- environment overrides --


def test_environment_overrides_nested_keys_and_wins_over_the_file() -> None:
    environ = {
        "REGCACHE_DATA_DIR": "/srv/regcache",
        "REGCACHE_LOG_LEVEL": "DEBUG",
        "REGCACHE_MIRROR__LISTEN": "127.0.0.1:0",
        "REGCACHE_MIRROR__ALLOW_UNKNOWN_REGISTRIES": "yes",
        "REGCACHE_CACHE__MAX_SIZE": "10GB",
        "REGCACHE_CACHE__TAG_TTL": "1h30m",
        "REGCACHE_PROXY__TUNNEL": " *.corp.example, git.example:443 ,",
        "REGCACHE_PROXY__USERS": f"alice={HASH}, bob={HASH}",
        "REGCACHE_CONFIG": "/etc/regcache.toml",
        "PATH": "/usr/bin",
    }
    config = load_config("data_dir = '/from/file'\n[cache]\ntag_ttl = '1m'\n", environ)
    assert config.data_dir == "/srv/regcache"
    assert config.log_level == "debug"
    assert config.mirror.listen == ListenAddress("127.0.0.1", 0)
    assert config.mirror.allow_unknown_registries is True
    assert config.cache.max_size == 10_000_000_000
    assert config.cache.tag_ttl == 5400.0
    assert config.proxy.tunnel == ("*.corp.example", "git.example:443")
    assert dict(config.proxy.users) == {"alice": HASH, "bob": HASH}


def test_environment_overrides_a_registry_with_dots_in_its_name() -> None:
    environ = {
        "REGCACHE_REGISTRIES__DOCKER_IO__USERNAME": "me",
        "REGCACHE_REGISTRIES__DOCKER_IO__PASSWORD": "token",
        "REGCACHE_REGISTRIES__REGISTRY_K8S_IO__MIRRORS": "https://a.example,https://b.example",
        "REGCACHE_REGISTRIES__QUAY_IO__ENABLED": "false",
        "REGCACHE_REGISTRIES__HARBOR_CORP_EXAMPLE_8443__CA_FILE": "/ca.pem",
    }
    text = '[registries."harbor.corp.example:8443"]\nurl = "https://harbor.corp.example:8443"\n'
    config = load_config(text, environ)
    assert (config.registries["docker.io"].username, config.registries["docker.io"].password) == (
        "me",
        "token",
    )
    assert config.registries["registry.k8s.io"].mirrors == (
        "https://a.example",
        "https://b.example",
    )
    assert "quay.io" not in config.registries
    assert config.registries["harbor.corp.example:8443"].ca_file == "/ca.pem"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"REGCACHE_CACHE__MAX_SISE": "1"},
            'REGCACHE_CACHE__MAX_SISE: unknown environment variable: cache has no key "max_sise"'
            " (did you mean REGCACHE_CACHE__MAX_SIZE?)",
        ),
        (
            {"REGCACHE_DATADIR": "/x"},
            'REGCACHE_DATADIR: unknown environment variable: the top level has no key "datadir"'
            " (did you mean REGCACHE_DATA_DIR?)",
        ),
        (
            {"REGCACHE_MIRROR": "x"},
            "REGCACHE_MIRROR: mirror is a table: set one of its keys, e.g. REGCACHE_MIRROR__LISTEN",
        ),
        (
            {"REGCACHE_REGISTRIES__DOCKER_IO__USERNAMES": "x"},
            "REGCACHE_REGISTRIES__DOCKER_IO__USERNAMES: unknown environment variable:"
            ' registries."docker.io" has no key "usernames"'
            " (did you mean REGCACHE_REGISTRIES__DOCKER_IO__USERNAME?)",
        ),
        (
            {"REGCACHE_CACHE__TAG_TTL": "soon"},
            'cache.tag_ttl: expected a duration such as 30s, 5m, 24h, got "soon"'
            " (from REGCACHE_CACHE__TAG_TTL)",
        ),
        (
            {"REGCACHE_MIRROR__ALLOW_UNKNOWN_REGISTRIES": "maybe"},
            "mirror.allow_unknown_registries: expected a boolean (true, false, 1, 0, yes, no),"
            ' got "maybe" (from REGCACHE_MIRROR__ALLOW_UNKNOWN_REGISTRIES)',
        ),
        (
            {"REGCACHE_PROXY__TUNNEL": "a.example,bad host"},
            'proxy.tunnel[1]: "bad host" is not a valid host name (from REGCACHE_PROXY__TUNNEL)',
        ),
        (
            {"REGCACHE_MIRROR__USERS": "alice"},
            "mirror.users: expected name=hash pairs separated by commas"
            " (from REGCACHE_MIRROR__USERS)",
        ),
        (
            {"REGCACHE_REGISTRIES": "x"},
            "REGCACHE_REGISTRIES: expected REGCACHE_REGISTRIES__<REGISTRY>__<KEY>,"
            " e.g. REGCACHE_REGISTRIES__DOCKER_IO__USERNAME",
        ),
        (
            {"REGCACHE_MIRROR__LISTEN__HOST": "x"},
            "REGCACHE_MIRROR__LISTEN__HOST: unknown environment variable: mirror has no key"
            ' "listen__host" (did you mean REGCACHE_MIRROR__LISTEN?)',
        ),
    ],
)
def test_environment_errors(environ: dict[str, str], message: str) -> None:
    assert error_of(None, environ) == message


def test_an_environment_variable_cannot_create_a_registry() -> None:
    variable = "REGCACHE_REGISTRIES__EXAMPLE_COM__URL"
    with pytest.raises(ConfigError) as info:
        load_config(None, {variable: "https://example.com"})
    assert info.value.key_path == variable
    assert "no configured registry is EXAMPLE_COM" in info.value.reason


def test_environment_registry_names_must_be_unambiguous() -> None:
    text = (
        '[registries."my-reg.example"]\nurl = "https://my-reg.example"\n'
        '[registries."my.reg.example"]\nurl = "https://my.reg.example"\n'
    )
    variable = "REGCACHE_REGISTRIES__MY_REG_EXAMPLE__CA_FILE"
    assert error_of(text, {variable: "/x"}) == (
        f'{variable}: matches registries "my-reg.example" and "my.reg.example"'
    )


def test_environment_name() -> None:
    assert environment_name("data_dir") == "REGCACHE_DATA_DIR"
    assert environment_name("cache", "max_size") == "REGCACHE_CACHE__MAX_SIZE"
    assert (
        environment_name("registries", "docker.io", "username")
        == "REGCACHE_REGISTRIES__DOCKER_IO__USERNAME"
    )


# -- listeners --


def test_an_empty_listen_disables_a_front_end() -> None:
    config = load_config('[mirror]\nlisten = ""\n[proxy]\nlisten = ""\n', {})
    assert config.mirror.listen is None
    assert config.proxy.listen is None
    config = load_config(None, {"REGCACHE_PROXY__LISTEN": ""})
    assert config.proxy.listen is None
    assert config.mirror.listen is not None


@pytest.mark.parametrize(
    ("text", "host", "port", "rendered"),
    [
        ("0.0.0.0:5000", "0.0.0.0", 5000, "0.0.0.0:5000"),
        (":5000", "", 5000, ":5000"),
        ("[::]:5000", "::", 5000, "[::]:5000"),
        ("[::1]:65535", "::1", 65535, "[::1]:65535"),
        ("127.0.0.1:0", "127.0.0.1", 0, "127.0.0.1:0"),
        ("LocalHost:80", "localhost", 80, "localhost:80"),
    ],
)
def test_listen_addresses(text: str, host: str, port: int, rendered: str) -> None:
    address = ListenAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert str(address) == rendered
    assert ListenAddress.parse(rendered) == address


@pytest.mark.parametrize(
    "text", ["", "5000", ":", ":-1", ":65536", "[::]", "[::", "::1:5000", "1.2.3.999:80", "a b:1"]
)
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        ListenAddress.parse(text)
    assert info.value.key_path == ""
    assert info.value.reason.startswith("expected a listen address")


def test_listen_address_validates_when_built_directly() -> None:
    with pytest.raises(ConfigError, match="port"):
        ListenAddress("0.0.0.0", 70000)
    with pytest.raises(ConfigError, match="host"):
        ListenAddress("no such host!", 1)


# -- durations and sizes --


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("1d2h3m4s5ms", 93784.005),
        ("45", 45.0),
        ("0", 0.0),
        (" 10s ", 10.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "s", "-5s", "5x", "5m5h", "1h1h", "1.s", ".5s", "5 s", "1e3s", "36600d", "x" * 300]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert info.value.reason.startswith("expected a duration such as 30s, 5m, 24h, got ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (30, "30s"),
        (300, "5m"),
        (5400, "1h30m"),
        (86400, "24h"),
        (1.5, "1.5s"),
    ],
)
def test_render_duration(seconds: float, text: str) -> None:
    assert render_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100GiB", 100 * GiB),
        ("512MiB", 512 * 1024**2),
        ("10GB", 10 * 10**9),
        ("10G", 10 * 10**9),
        ("10Gi", 10 * GiB),
        ("1024", 1024),
        ("1.5GiB", 3 * GiB // 2),
        ("1 kB", 1000),
        ("7b", 7),
        ("0.5B", 0),
        ("7.5EiB", 15 * 2**59),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "10XB", "1,5GiB", "10  GB", "1e9", "8EiB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(text)
    assert info.value.reason.startswith("expected a size such as 100GiB, 512MiB or 10GB, got ")


def test_sizes_and_durations_from_toml_numbers() -> None:
    config = load_config("[cache]\nmax_size = 1048576\ntag_ttl = 90\nstale_if_error = 0.5", {})
    assert config.cache.max_size == 1024**2
    assert config.cache.tag_ttl == 90.0
    assert config.cache.stale_if_error == 0.5
    assert error_of("[cache]\nmax_size = true") == (
        "cache.max_size: expected a size such as 100GiB, 512MiB or 10GB, got true"
    )
    assert error_of("[cache]\ntag_ttl = nan") == (
        "cache.tag_ttl: expected a duration such as 30s, 5m, 24h, got nan"
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (1023, "1023"),
        (1024, "1KiB"),
        (100 * GiB, "100GiB"),
        (10**10, "10GB"),
        (1500, "1500"),
    ],
)
def test_render_size(size: int, text: str) -> None:
    assert render_size(size) == text


# -- hosts, URLs, secrets --


@pytest.mark.parametrize(
    ("pattern", "host", "port", "expected"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "EXAMPLE.com.", 8443, True),
        ("example.com:443", "example.com", 443, True),
        ("example.com:443", "example.com", 80, False),
        ("*.example.com", "a.b.example.com", 443, True),
        ("*.example.com", "example.com", 443, False),
        ("*.example.com", "badexample.com", 443, False),
        ("[::1]:443", "::1", 443, True),
        ("[::1]", "[0::1]", 22, True),
        ("10.0.0.1", "10.0.0.2", 22, False),
    ],
)
def test_host_pattern_matches(pattern: str, host: str, port: int, expected: bool) -> None:
    assert host_pattern_matches(pattern, host, port) is expected


def test_url_host_and_redaction() -> None:
    assert url_host("https://Registry-1.Docker.io:443/") == "registry-1.docker.io"
    assert url_host("http://localhost:5000") == "localhost:5000"
    assert url_host("https://[::1]:8443/v") == "[::1]:8443"
    assert redact_url("http://me:pw@proxy:3128/") == "http://me:***@proxy:3128/"
    assert redact_url("http://proxy:3128") == "http://proxy:3128"


def test_secrets_stay_out_of_repr() -> None:
    config = load_config(
        '[upstream]\nproxy = "http://me:proxypass@gw.corp:3128"\n'
        f'[mirror]\nusers = {{ alice = "{HASH}" }}\n'
        '[registries."docker.io"]\nusername = "me"\npassword = "hubtoken"\n',
        {},
    )
    text = repr(config)
    for secret in ("proxypass", "hubtoken", HASH, "c2FsdHNhbHQ"):
        assert secret not in text
    assert "alice" in text
    assert "'***'" in repr(config.registries["docker.io"])
    assert config.upstream.proxy == "http://me:proxypass@gw.corp:3128"
    dumped = dump_config(config)
    for secret in ("proxypass", "hubtoken", HASH):
        assert secret not in dumped
    assert "hubtoken" in dump_config(config, redact=False)


def test_registry_name_map() -> None:
    names = registry_name_map(load_config(None, {}))
    assert names["docker.io"] == "docker.io"
    assert names["dockerhub"] == "docker.io"
    assert names["index.docker.io"] == "docker.io"
    assert names["registry-1.docker.io"] == "docker.io"
    assert names["k8s.gcr.io"] == "registry.k8s.io"
    assert names["ghcr.io"] == "ghcr.io"
    config = load_config(
        '[registries."corp"]\nurl = "https://reg.corp.example:8443"\naliases = ["internal"]', {}
    )
    names = registry_name_map(config)
    assert names["reg.corp.example:8443"] == names["internal"] == names["corp"] == "corp"


def test_built_directly_configs_are_validated_too() -> None:
    with pytest.raises(ConfigError) as info:
        RegistryConfig(url="registry-1.docker.io")
    assert str(info.value) == "url: must be an https or http URL"
    with pytest.raises(ConfigError) as info:
        Config(registries={"Docker.io": RegistryConfig(url="https://x.example")})
    assert info.value.key_path == 'registries."Docker.io"'
    disabled = {**DEFAULT_REGISTRIES, "gcr.io": RegistryConfig(url="https://gcr.io", enabled=False)}
    assert "gcr.io" not in Config(registries=disabled).registries


# -- rendering the configuration --


def test_dump_defaults_is_toml_that_loads_to_the_defaults() -> None:
    text = dump_defaults()
    assert 'max_size = "100GiB"' in text
    assert 'stale_if_error = "24h"' in text
    assert "REGCACHE_CACHE__TAG_TTL" in text
    assert load_config(text, {}) == Config()


def test_dump_config_round_trips() -> None:
    config = load_config(
        DESIGN_EXAMPLE
        + '\n[registries."gcr.io"]\nenabled = false\n'
        + '[registries."corp.example"]\nurl = "http://corp.example:5000"\n'
        + 'username = "u"\npassword = "p\\"\\u0001"\nproxy = "http://a:b@gw:1"\n',
        {"REGCACHE_PROXY__TUNNEL": "*.a.example,b.example:22", "REGCACHE_MIRROR__LISTEN": ""},
    )
    assert load_config(dump_config(config, redact=False), {}) == config


def test_the_public_api() -> None:
    assert sorted(regcache.config.__all__) == sorted(
        [
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
    )
    for name in regcache.config.__all__:
        assert getattr(regcache.config, name) is not None
    assert attrs.has(Config)


# -- property tests --


@given(st.text(max_size=40))
def test_parse_duration_random_text(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ConfigError as exc:
        assert exc.key_path == ""
    else:
        assert math.isfinite(seconds)
        assert 0 <= seconds <= CENTURY


@given(st.text(max_size=40))
def test_parse_size_random_text(text: str) -> None:
    try:
        size = parse_size(text)
    except ConfigError as exc:
        assert exc.key_path == ""
    else:
        assert isinstance(size, int)
        assert 0 <= size < 2**63


@given(st.text(max_size=60))
def test_parse_listen_random_text(text: str) -> None:
    try:
        address = ListenAddress.parse(text)
    except ConfigError as exc:
        assert exc.key_path == ""
    else:
        assert 0 <= address.port <= 65535
        assert ListenAddress.parse(str(address)) == address


@given(st.just(0.0) | st.floats(min_value=1e-9, max_value=CENTURY))
def test_duration_round_trip(seconds: float) -> None:
    assert parse_duration(render_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=CENTURY * 1000))
def test_whole_millisecond_durations_round_trip(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    assert parse_duration(render_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_size_round_trip(size: int) -> None:
    assert parse_size(render_size(size)) == size


@given(
    st.sampled_from(["", "0.0.0.0", "127.0.0.1", "::", "::1", "localhost", "a-b.example"]),
    st.integers(min_value=0, max_value=65535),
)
def test_listen_round_trip(host: str, port: int) -> None:
    address = ListenAddress(host, port)
    assert ListenAddress.parse(str(address)) == address


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
KEYS = [
    "data_dir",
    "log_level",
    "mirror",
    "proxy",
    "upstream",
    "cache",
    "registries",
    "listen",
    "default_registry",
    "allow_unknown_registries",
    "users",
    "tunnel",
    "ca_cert",
    "ca_key",
    "timeout",
    "connect_timeout",
    "max_size",
    "tag_ttl",
    "stale_if_error",
    "access_ttl",
    "url",
    "aliases",
    "username",
    "password",
    "password_file",
    "ca_file",
    "mirrors",
    "enabled",
    "docker.io",
    "alice",
    "x",
]
SCALARS = st.one_of(
    st.sampled_from(
        [
            "",
            "0.0.0.0:5000",
            ":0",
            "5m",
            "100GiB",
            "https://a.example",
            "http://u:p@gw:3128",
            "dockerhub",
            "*.a.example",
            HASH,
            "info",
            "ftp://x",
        ]
    ),
    TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | TEXT, inner, max_size=4)
    ),
    max_leaves=8,
)


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that TOML wants DEL escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(KEYS) | TEXT, VALUES, max_size=5),
    st.dictionaries(
        st.sampled_from(
            [
                "REGCACHE_DATA_DIR",
                "REGCACHE_MIRROR__LISTEN",
                "REGCACHE_MIRROR__USERS",
                "REGCACHE_PROXY__TUNNEL",
                "REGCACHE_CACHE__TAG_TTL",
                "REGCACHE_REGISTRIES__DOCKER_IO__ENABLED",
                "REGCACHE_REGISTRIES__DOCKER_IO__MIRRORS",
                "REGCACHE_REGISTRIES__X__URL",
                "REGCACHE_",
                "REGCACHE___",
            ]
        ),
        st.text(max_size=10) | st.sampled_from(["true", "0", "a=b", ",", "1h"]),
        max_size=3,
    ),
)
def test_random_toml_tables_raise_only_config_errors(
    tables: dict[str, Any], environ: dict[str, str]
) -> None:
    text = "\n".join(f"{toml_string(key)} = {toml_value(value)}" for key, value in tables.items())
    try:
        config = load_config(text, environ)
    except ConfigError as exc:
        assert isinstance(exc.reason, str)
    else:
        assert isinstance(config, Config)
        assert config.mirror.default_registry in config.registries


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_random_text_raises_only_config_errors(text: str) -> None:
    with contextlib.suppress(ConfigError):
        load_config(text, {})


@settings(max_examples=100)
@given(st.data())
def test_mangled_design_example_raises_only_config_errors(data: st.DataObject) -> None:
    text = DESIGN_EXAMPLE
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 5))
        insert = data.draw(st.sampled_from(["", "x", '"', "=", "[", "]", "\n", "0", ".", "-", ":"]))
        text = text[:position] + insert + text[position + cut :]
    with contextlib.suppress(ConfigError):
        load_config(text, {})


POSITIVE_DURATIONS = st.floats(min_value=1e-9, max_value=CENTURY)
DURATIONS = st.just(0.0) | POSITIVE_DURATIONS
LISTENS = st.none() | st.builds(
    ListenAddress,
    st.sampled_from(["", "0.0.0.0", "127.0.0.1", "::1", "localhost"]),
    st.integers(min_value=0, max_value=65535),
)
USERS = st.dictionaries(
    st.text(
        st.characters(categories=["L", "N", "P"], exclude_characters=":"), min_size=1, max_size=8
    ),
    st.just(HASH),
    max_size=2,
)
PATHS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
NAMES = st.sampled_from(
    ["corp.example", "localhost:5000", "10.1.2.3:8443", "[::1]:5000", "a-b.example"]
)
REGISTRIES = st.builds(
    RegistryConfig,
    url=st.sampled_from(
        ["https://r1.example", "http://10.9.9.9:5000/base", "https://[fd00::1]:8443"]
    ),
    aliases=st.lists(st.sampled_from(["alias-a", "alias-b.example"]), max_size=2, unique=True).map(
        tuple
    ),
    ca_file=PATHS,
    mirrors=st.lists(
        st.sampled_from(["https://m.example", "http://m2.example:81"]), max_size=2
    ).map(tuple),
    proxy=st.sampled_from(["", "http://gw:3128", "https://u:p@gw.example"]),
)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_valid_config_round_trips_through_dump(data: st.DataObject) -> None:
    registries = {
        name: registry
        for name, registry in DEFAULT_REGISTRIES.items()
        if data.draw(st.booleans(), label=f"keep {name}")
    }
    registries.update(data.draw(st.dictionaries(NAMES, REGISTRIES, max_size=1), label="extra"))
    try:
        config = Config(
            data_dir=data.draw(PATHS.filter(bool), label="data_dir"),
            log_level=data.draw(st.sampled_from(["debug", "info", "warning", "error"])),
            mirror=MirrorConfig(
                listen=data.draw(LISTENS),
                default_registry=data.draw(st.sampled_from([*registries, "docker.io"])),
                allow_unknown_registries=data.draw(st.booleans()),
                users=data.draw(USERS),
            ),
            proxy=ProxyConfig(
                listen=data.draw(LISTENS),
                tunnel=tuple(
                    data.draw(
                        st.lists(
                            st.sampled_from(["*.a.example", "b.example:22", "[::1]"]), max_size=3
                        )
                    )
                ),
                users=data.draw(USERS),
            ),
            upstream=UpstreamConfig(
                timeout=data.draw(POSITIVE_DURATIONS),
                connect_timeout=data.draw(POSITIVE_DURATIONS),
            ),
            cache=CacheConfig(
                max_size=data.draw(st.integers(min_value=1, max_value=2**63 - 1)),
                tag_ttl=data.draw(DURATIONS),
                stale_if_error=data.draw(DURATIONS),
                access_ttl=data.draw(DURATIONS),
            ),
            registries=registries,
        )
    except ConfigError:
        assume(False)
    assert load_config(dump_config(config, redact=False), {}) == config
