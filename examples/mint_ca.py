"""Mint a CA and a server certificate with regcache.core alone; write PEM files.

Run: ``python mint_ca.py`` writes ca.crt, ca.key, server.crt (the chain) and
server.key into MINT_DIR (default: ./pki) for the host MINT_HOST (default:
regcache.local). No network, no trio: the core is sans-IO.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from regcache.core import CertificateAuthority


def main() -> None:
    directory = Path(os.environ.get("MINT_DIR", "pki"))
    host = os.environ.get("MINT_HOST", "regcache.local")
    now = datetime.now(UTC)
    ca = CertificateAuthority.create(now=now)
    leaf = ca.mint_leaf(host, now=now)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("ca.crt", ca.cert_pem),
        ("ca.key", ca.key_pem),
        ("server.crt", leaf.chain_pem),
        ("server.key", leaf.key_pem),
    ):
        path = directory / name
        path.write_bytes(data)
        if name.endswith(".key"):
            path.chmod(0o600)
    print(f"wrote {directory}/ca.crt, ca.key, server.crt, server.key for {host}")


if __name__ == "__main__":
    main()
