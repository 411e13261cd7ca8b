"""skopeo, isolated from the host's configuration, as a real registry client.

Each runner has its own HOME, trust policy, registries.conf, empty auth file,
certificate directory and temporary directory, and an environment without
registry or proxy variables (unless the test passes them). ``verify_dir``
checks a ``dir:`` copy: every blob hashes to its file name, every manifest to
the digest that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._images import DOCKER_MANIFEST_LIST, OCI_INDEX

DEFAULT_BINARY = "skopeo"

# Bound on one skopeo invocation.
DEFAULT_TIMEOUT = 120.0

# Variables that would make skopeo read the host's configuration or
# credentials, or go through a proxy the test did not ask for.
_SCRUBBED = (
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "CONTAINERS_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINERS_STORAGE_CONF",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
)

_INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)


@attrs.frozen
class SkopeoResult:
    """Outcome of one skopeo run."""

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether skopeo exited with 0."""
        return self.returncode == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8."""
        return self.stdout.decode("utf-8", errors="replace")

    def check(self) -> SkopeoResult:
        """Return self, or raise AssertionError carrying stderr."""
        if self.returncode != 0:
            raise AssertionError(
                f"skopeo failed ({self.returncode}): {' '.join(self.args)}\n{self.stderr}"
            )
        return self


@attrs.frozen
class DirContents:
    """What a verified ``dir:`` copy holds."""

    manifest_digest: str
    """Digest of ``manifest.json`` (the index when copied with --all)."""
    manifest_media_type: str
    manifest_digests: frozenset[str]
    """Every manifest present: the top one and any per-platform ones."""
    blob_digests: frozenset[str]
    """Every config and layer blob present (all verified)."""


class DirVerificationError(AssertionError):
    """A ``dir:`` copy does not hash to what its manifests say."""


@attrs.frozen
class RegistryMirror:
    """A ``[[registry.mirror]]`` entry."""

    location: str
    insecure: bool = False
    pull_from_mirror: str | None = None
    """``all``, ``digest-only`` or ``tag-only`` (containers-registries.conf 5)."""


@attrs.frozen
class RegistryEntry:
    """A ``[[registry]]`` entry of registries.conf (v2 format)."""

    prefix: str
    location: str | None = None
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[RegistryMirror, ...] = ()


def registries_conf(*entries: RegistryEntry) -> str:
    """Render a registries.conf with no search registries and entries."""
    q = json.dumps
    lines = ["unqualified-search-registries = []", 'short-name-mode = "disabled"', ""]
    for entry in entries:
        lines.append("[[registry]]")
        lines.append(f"prefix = {q(entry.prefix)}")
        lines.append(f"location = {q(entry.location or entry.prefix)}")
        lines.append(f"insecure = {q(entry.insecure)}")
        lines.append(f"blocked = {q(entry.blocked)}")
        lines.append(f"mirror-by-digest-only = {q(entry.mirror_by_digest_only)}")
        for mirror in entry.mirrors:
            lines.append("[[registry.mirror]]")
            lines.append(f"location = {q(mirror.location)}")
            lines.append(f"insecure = {q(mirror.insecure)}")
            if mirror.pull_from_mirror is not None:
                lines.append(f"pull-from-mirror = {q(mirror.pull_from_mirror)}")
        lines.append("")
    return "\n".join(lines)


class Skopeo:
    """An isolated skopeo: its own HOME, policy, registries.conf and auth file.

    ``ca_file`` (a PEM) is placed as ``certs/ca.crt`` and passed as
    ``--src-cert-dir`` so skopeo trusts the test CA for TLS registries and the
    token realm. ``env`` adds variables (e.g. ``HTTPS_PROXY``); they stay in
    ``extra_env``, which a test may change between runs.
    """

    def __init__(
        self,
        directory: Path,
        *,
        ca_file: Path | None = None,
        registries: str = "",
        env: Mapping[str, str] | None = None,
        binary: str = DEFAULT_BINARY,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.timeout = timeout
        self.home = directory / "home"
        self.tmp = directory / "tmp"
        self.policy_path = directory / "policy.json"
        self.registries_conf_path = directory / "registries.conf"
        self.registries_d = directory / "registries.d"
        self.auth_file = directory / "auth.json"
        self.cert_dir = directory / "certs"
        for path in (self.home, self.tmp, self.registries_d, self.cert_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.policy_path.write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]}) + "\n"
        )
        self.auth_file.write_text('{"auths": {}}\n')
        if ca_file is not None:
            (self.cert_dir / "ca.crt").write_bytes(ca_file.read_bytes())
        self.set_registries_conf(registries or registries_conf())
        self.extra_env = dict(env or {})

    def set_registries_conf(self, text: str) -> None:
        """Replace the registries.conf (see ``registries_conf()``)."""
        self.registries_conf_path.write_text(text)

    @property
    def env(self) -> dict[str, str]:
        """The environment skopeo runs with."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env = {k: v for k, v in env.items() if not k.startswith("CONTAINERS_")}
        env.update(
            HOME=str(self.home),
            TMPDIR=str(self.tmp),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_RUNTIME_DIR=str(self.home / "run"),
            REGISTRY_AUTH_FILE=str(self.auth_file),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf_path),
        )
        env.update(self.extra_env)
        return env

    def run(self, *args: str, timeout: float | None = None) -> SkopeoResult:
        """Run ``skopeo <global isolation flags> args``."""
        argv = (
            self.binary,
            "--policy",
            str(self.policy_path),
            "--registries-conf",
            str(self.registries_conf_path),
            "--registries.d",
            str(self.registries_d),
            "--tmpdir",
            str(self.tmp),
            *args,
        )
        try:
            completed = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self.env,
                timeout=self.timeout if timeout is None else timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            stderr = error.stderr.decode(errors="replace") if error.stderr else ""
            return SkopeoResult(argv, -9, error.stdout or b"", f"timed out\n{stderr}")
        return SkopeoResult(
            argv, completed.returncode, completed.stdout, completed.stderr.decode(errors="replace")
        )

    def _source_flags(
        self, creds: str | tuple[str, str] | None, tls_verify: bool | None
    ) -> list[str]:
        flags = ["--src-authfile", str(self.auth_file), "--src-cert-dir", str(self.cert_dir)]
        if creds is None:
            flags.append("--src-no-creds")
        else:
            flags += ["--src-creds", creds if isinstance(creds, str) else ":".join(creds)]
        if tls_verify is not None:
            flags.append(f"--src-tls-verify={'true' if tls_verify else 'false'}")
        return flags

    def copy(
        self,
        source_ref: str,
        dest_dir: Path,
        *,
        all_platforms: bool = False,
        creds: str | tuple[str, str] | None = None,
        tls_verify: bool | None = None,
        extra_args: Sequence[str] = (),
        timeout: float | None = None,
    ) -> SkopeoResult:
        """``skopeo copy source_ref dir:dest_dir``.

        ``source_ref`` is a full reference such as
        ``docker://127.0.0.1:5000/public/app:v1``. ``tls_verify=False`` lets
        skopeo talk plain HTTP (and skip verification) to the registry;
        ``creds`` is ``"user:password"`` or a pair; without creds the pull is
        anonymous (``--src-no-creds``).
        """
        args = ["copy", *self._source_flags(creds, tls_verify)]
        if all_platforms:
            args.append("--all")
        args += [*extra_args, source_ref, f"dir:{dest_dir}"]
        return self.run(*args, timeout=timeout)

    def inspect(
        self,
        ref: str,
        *,
        raw: bool = True,
        creds: str | tuple[str, str] | None = None,
        tls_verify: bool | None = None,
        extra_args: Sequence[str] = (),
        timeout: float | None = None,
    ) -> SkopeoResult:
        """``skopeo inspect [--raw] ref``: stdout holds the manifest or JSON."""
        flags = self._source_flags(creds, tls_verify)
        # inspect takes the unprefixed spellings of the source flags.
        flags = [f.replace("--src-", "--", 1) for f in flags]
        args = ["inspect", *flags]
        if raw:
            args.append("--raw")
        args += [*extra_args, ref]
        return self.run(*args, timeout=timeout)

    @staticmethod
    def verify_dir(dest_dir: Path, expected_digest: str | None = None) -> DirContents:
        """Check a ``dir:`` copy; return its manifest and blob digests.

        Every file named by a hex digest must hash to it; ``manifest.json``
        must hash to expected_digest if given; when it is an index, every
        per-platform manifest present (``<hex>.manifest.json``) must be listed
        in it and hash to its name; every blob a present manifest names must
        be there.
        """
        top = (dest_dir / "manifest.json").read_bytes()
        top_digest = _sha256(top)
        if expected_digest is not None and top_digest != expected_digest:
            raise DirVerificationError(f"manifest.json is {top_digest}, expected {expected_digest}")
        document = json.loads(top)
        media_type = _media_type(document)
        manifests: dict[str, dict[str, Any]] = {}
        manifest_digests = {top_digest}
        if media_type in _INDEX_TYPES:
            listed = {entry["digest"] for entry in document.get("manifests", [])}
            for path in dest_dir.glob("*.manifest.json"):
                digest = _name_digest(path.name.removesuffix(".manifest.json"))
                if digest not in listed:
                    raise DirVerificationError(f"{path.name} is not in the index")
                data = path.read_bytes()
                if _sha256(data) != digest:
                    raise DirVerificationError(f"{path.name} hashes to {_sha256(data)}")
                manifests[digest] = json.loads(data)
                manifest_digests.add(digest)
        else:
            manifests[top_digest] = document
        blobs: set[str] = set()
        for path in dest_dir.iterdir():
            if "." in path.name or path.name == "version" or path.name.startswith("signature-"):
                continue
            digest = _name_digest(path.name)
            actual = _sha256_file(path)
            if actual != digest:
                raise DirVerificationError(f"blob {path.name} hashes to {actual}")
            blobs.add(digest)
        for digest, manifest in manifests.items():
            wanted = [manifest["config"], *manifest.get("layers", [])]
            for descriptor in wanted:
                if descriptor["digest"] not in blobs:
                    raise DirVerificationError(
                        f"{descriptor['digest']} of manifest {digest} is missing"
                    )
                size = (dest_dir / descriptor["digest"].split(":", 1)[1]).stat().st_size
                if size != descriptor["size"]:
                    raise DirVerificationError(
                        f"{descriptor['digest']} has {size} bytes,"
                        f" manifest says {descriptor['size']}"
                    )
        return DirContents(
            manifest_digest=top_digest,
            manifest_media_type=media_type,
            manifest_digests=frozenset(manifest_digests),
            blob_digests=frozenset(blobs),
        )


def _media_type(document: dict[str, Any]) -> str:
    media_type = document.get("mediaType")
    if isinstance(media_type, str):
        return media_type
    return OCI_INDEX if "manifests" in document else "application/vnd.oci.image.manifest.v1+json"


def _name_digest(name: str) -> str:
    if len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
        raise DirVerificationError(f"unexpected file {name!r} in the copy")
    return "sha256:" + name


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()
