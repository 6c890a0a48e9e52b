"""Self-signed certificates for the TLS-speaking test servers (IMAPS, STARTTLS, SMTP).

Why: clients under test must verify certificates for real (no
``verify=False`` shortcuts), so each server gets a self-signed certificate for
``localhost`` / ``127.0.0.1`` and tests pass its path as the CA file. The
certificate is made with the ``openssl`` command line, which is always present
on Debian, so no extra Python dependency is needed.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its unencrypted private key.

    The certificate is self-signed, so ``cert`` is also the CA file to verify against.
    """

    cert: Path
    key: Path

    @property
    def ca_file(self) -> Path:
        """The file a client should trust (the self-signed certificate itself)."""
        return self.cert

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` that verifies hostnames and trusts only this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))

    def server_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for a server presenting this certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def make_self_signed_cert(directory: Path, name: str = "server", days: int = 30) -> CertPair:
    """Create ``NAME.pem`` and ``NAME.key`` in ``directory`` for CN=localhost.

    The subjectAltName covers ``DNS:localhost`` and ``IP:127.0.0.1`` so both
    ``ssl.create_default_context`` hostname checks pass whichever a client uses.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    cmd = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", str(days),
        "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as e:
        raise RuntimeError("openssl is not installed; run scripts/install-test-deps.sh") from e
    if proc.returncode != 0:
        raise RuntimeError(f"openssl failed to create a test certificate:\n{proc.stderr}")
    key.chmod(0o600)
    return CertPair(cert=cert, key=key)
