"""The core's contract as a package: pure imports, a pinned public API, docstrings."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import regcache.core

CORE_DIR = Path(regcache.core.__file__).parent
#: No core module may import these itself.
FORBIDDEN = {"trio", "asyncio", "ssl", "socket", "threading", "selectors"}
#: Nor may importing the core load these even indirectly. (socket and
#: threading do get loaded: the standard library's email package, which
#: cryptography's x509 imports, imports them; nothing in the core uses them.)
FORBIDDEN_INDIRECT = {"trio", "asyncio", "ssl", "_ssl", "_asyncio"}


def test_importing_every_core_module_loads_no_io_module() -> None:
    modules = sorted(
        f"regcache.core.{path.stem}" for path in CORE_DIR.glob("*.py") if path.stem != "__init__"
    )
    assert len(modules) >= 10
    program = (
        "import importlib, json, sys\n"
        f"for name in {modules!r} + ['regcache.core', 'regcache.config']:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    # -I: isolated, so no site hook or PYTHONSTARTUP can preload anything.
    result = subprocess.run(
        [sys.executable, "-I", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=CORE_DIR.parents[1],
    )
    loaded = set(json.loads(result.stdout))
    assert "regcache.core._routes" in loaded
    assert not (loaded & FORBIDDEN_INDIRECT), sorted(loaded & FORBIDDEN_INDIRECT)
    assert not any(name.startswith("trio.") for name in loaded)


def test_core_source_never_imports_an_io_module() -> None:
    for path in list(CORE_DIR.glob("*.py")) + list((CORE_DIR.parent / "config").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                top = words[1].split(".")[0].rstrip(",")
                assert top not in FORBIDDEN, f"{path.name}:{number}: {line.strip()}"


PUBLIC_API = {
    "ALGORITHM_HEX_LENGTHS",
    "DEFAULT_ACCEPT",
    "DEFAULT_REGISTRY",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "AuthError",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobRoute",
    "BlobStore",
    "BlobWriter",
    "BlobWriterState",
    "ByteRange",
    "CachedTag",
    "Catalog",
    "CertificateAuthority",
    "Challenge",
    "ConfigError",
    "Credentials",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "DigestVerifier",
    "Done",
    "ErrorCode",
    "Fail",
    "FetchToken",
    "LeafCache",
    "LeafCertificate",
    "LeafKeyType",
    "LocalProtocolError",
    "Manifest",
    "ManifestRoute",
    "NegotiationState",
    "Ping",
    "Platform",
    "ProtocolError",
    "Reference",
    "Referrers",
    "RegcacheError",
    "RegistryAuthState",
    "RegistryMap",
    "RemoteProtocolError",
    "Route",
    "Scope",
    "SendRequest",
    "StorageError",
    "TagAction",
    "TagsList",
    "Token",
    "TokenCache",
    "TokenKey",
    "TokenNegotiation",
    "WriteKind",
    "WriteOperation",
    "access_is_fresh",
    "accepts",
    "admits_index",
    "basic_authorization",
    "cached_authorization",
    "canonical_registry",
    "check_password_hash",
    "decide_tag",
    "error_body",
    "hash_password",
    "is_manifest_media_type",
    "is_upstream_outage",
    "load_docker_config",
    "may_serve_stale",
    "merge_scopes",
    "normalize_auth_key",
    "normalize_media_type",
    "normalize_repository",
    "parse_accept",
    "parse_basic_authorization",
    "parse_content_range",
    "parse_manifest",
    "parse_range",
    "parse_route",
    "parse_token_response",
    "parse_www_authenticate",
    "select_challenge",
    "upstream_accept",
    "validate_registry",
    "validate_repository",
    "validate_tag",
    "verify_password",
}


def test_public_api_is_pinned() -> None:
    assert set(regcache.core.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert hasattr(regcache.core, name), name


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = []
    for name in regcache.core.__all__:
        value = getattr(regcache.core, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            if not (value.__doc__ or "").strip():
                missing.append(name)
            if inspect.isclass(value):
                for member_name, member in vars(value).items():
                    if member_name.startswith("_") or not inspect.isfunction(member):
                        continue
                    if not (member.__doc__ or "").strip():
                        missing.append(f"{name}.{member_name}")
    assert not missing, missing
