"""The CONNECT front end's TLS: the CA on disk and a server context per host.

The CA is made on first start in ``data_dir/ca`` (directory 0700, key 0600)
or loaded from ``[proxy] ca_cert`` and ``ca_key``. Leaves are minted by the
core's :class:`~regcache.core.LeafCache` and turned into ``ssl.SSLContext``
objects, cached per leaf, so a renewed leaf or a new CA gets a new context.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from regcache._files import read_configured_file
from regcache.config import Config
from regcache.core import CertificateAuthority, ConfigError, LeafCache, LeafCertificate

log = logging.getLogger("regcache.proxy")

CA_CERT_NAME = "ca.crt"
CA_KEY_NAME = "ca.key"


def load_or_create_ca(config: Config, now: datetime | None = None) -> CertificateAuthority:
    """The interception CA: the configured one, the one in data_dir/ca, or a new one."""
    now = now or datetime.now(UTC)
    if config.proxy.ca_cert or config.proxy.ca_key:
        if not (config.proxy.ca_cert and config.proxy.ca_key):
            raise ConfigError("proxy.ca_key", "ca_cert and ca_key must be set together")
        cert_pem = read_configured_file(config.proxy.ca_cert, "proxy.ca_cert")
        key_pem = read_configured_file(config.proxy.ca_key, "proxy.ca_key")
        return CertificateAuthority.from_pem(cert_pem, key_pem, now=now)
    ca_dir = Path(config.data_dir) / "ca"
    cert_path, key_path = ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME
    if cert_path.exists() and key_path.exists():
        return CertificateAuthority.from_pem(
            read_configured_file(str(cert_path), "proxy.ca_cert"),
            read_configured_file(str(key_path), "proxy.ca_key"),
            now=now,
        )
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_dir.chmod(0o700)  # mkdir's mode is masked by the umask
    authority = CertificateAuthority.create(now=now)
    # The key is written 0600 from its first byte: created with that mode,
    # never chmod-ed after the secret is in it.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(authority.key_pem)
    cert_path.write_bytes(authority.cert_pem)
    log.info("made a new CA in %s (trust %s on the nodes)", ca_dir, cert_path)
    return authority


class ServerContexts:
    """TLS server contexts for intercepted hosts, one per minted leaf."""

    def __init__(self, authority: CertificateAuthority, scratch_dir: Path) -> None:
        self.authority = authority
        self._leaves = LeafCache(authority)
        self._contexts: dict[LeafCertificate, ssl.SSLContext] = {}
        self._scratch_dir = scratch_dir

    def context_for(self, host: str) -> ssl.SSLContext:
        """A server context presenting a leaf for ``host`` (minted when needed)."""
        leaf = self._leaves.get(host, datetime.now(UTC))
        context = self._contexts.get(leaf)
        if context is None:
            context = self._contexts[leaf] = self._build(leaf)
            # Renewed leaves leave their old contexts behind; drop those.
            for stale in [
                known for known in self._contexts if known.host == host and known != leaf
            ]:
                del self._contexts[stale]
        return context

    def _build(self, leaf: LeafCertificate) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        # load_cert_chain takes only file names: the key goes through a
        # temporary file (mkstemp makes it 0600) in the 0700 CA directory,
        # removed at once.
        with tempfile.NamedTemporaryFile(dir=self._scratch_dir, suffix=".pem") as scratch:
            scratch.write(leaf.chain_pem + leaf.key_pem)
            scratch.flush()
            context.load_cert_chain(scratch.name)
        return context
