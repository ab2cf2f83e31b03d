"""A throwaway certificate authority for the simulator's HTTPS media host.

whatsmeow verifies the media host's certificate against Go's system pool, which Go reads from
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as they were when the process started. So a neonize process that
uploads or downloads media must start with :func:`tls_env` in its environment: a bundle of the
system's CAs plus this test CA. One CA serves the whole test process (:func:`test_ca`), so the
bundle can be written before any simulator exists.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUNDLE_NAME = "wasim-ca-bundle.pem"
HOST_IP = "127.0.0.1"


@dataclass(frozen=True)
class TestCA:
    """The CA's certificate and a server certificate for ``127.0.0.1`` it signed (PEM), with the
    server's key; ``cert_file`` / ``key_file`` are private files for ``ssl.load_cert_chain``."""

    ca_pem: bytes
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _create() -> TestCA:
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("wasim test CA"))
        .issuer_name(_name("wasim test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(HOST_IP))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST_IP))]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="wasim-tls-"))
    atexit.register(shutil.rmtree, directory, True)
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return TestCA(ca_cert.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


@cache
def test_ca() -> TestCA:
    """The test process's CA (created on first use)."""
    return _create()


def system_bundle() -> bytes:
    """The system's CA bundle: the file ``SSL_CERT_FILE`` names, else Debian's default (or none)."""
    named = os.environ.get("SSL_CERT_FILE")
    for candidate in ([Path(named)] if named else []) + [SYSTEM_BUNDLE]:
        if candidate.is_file() and candidate.name != BUNDLE_NAME:  # never nest an earlier bundle
            return candidate.read_bytes()
    return b""


def write_ca_bundle(directory: Path) -> Path:
    """Write ``directory/wasim-ca-bundle.pem``: the system's CAs plus the test CA; returns its path.

    Written atomically and only when its content changes: a Go process reads the file at its first
    TLS handshake, possibly while another test writes the bundle again."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / BUNDLE_NAME
    system = system_bundle()
    content = system + (b"" if system.endswith(b"\n") or not system else b"\n") + test_ca().ca_pem
    if not path.is_file() or path.read_bytes() != content:
        partial = directory / f".{BUNDLE_NAME}.{os.getpid()}"
        partial.write_bytes(content)
        partial.replace(path)
    return path


def tls_env(directory: Path | None = None) -> dict[str, str]:
    """The environment a neonize process must **start** with to trust the media host:
    ``SSL_CERT_FILE`` = the bundle, ``SSL_CERT_DIR`` = ``<directory>/wasim-ca`` holding only it.
    Without ``directory``, the bundle lives beside the test CA's files (one per test process)."""
    base = directory if directory is not None else test_ca().cert_file.parent
    bundle = write_ca_bundle(base / "wasim-ca")
    return {"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(bundle.parent)}
