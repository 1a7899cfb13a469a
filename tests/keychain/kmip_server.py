"""A real `pykmip-server` on loopback with a throwaway CA, standing for a customer's KMIP key
manager (used by the HYOK tests and bench/hyok.py).

    with KmipServer(tmp_dir) as server:
        key_id = server.admin().create_aes_key()
        server.stop(); server.start()   # same database: keys survive a restart

The CA, server and client certificates are made here with `cryptography` (client EKU
clientAuth, server EKU serverAuth with SAN 127.0.0.1). The server runs in its own process
group and keeps its SQLite database in the folder, so a restart finds the same keys.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    ca_pem: str
    server_cert_pem: str
    server_key_pem: str
    client_cert_pem: str
    client_key_pem: str


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def make_pki(client_name: str = "kcm") -> Pki:
    """A CA and a server and a client certificate it signs, valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "customer test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, usage: x509.ObjectIdentifier) -> tuple[str, str]:
        key = _key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode(), _pem(key)

    server_cert, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = leaf(client_name, ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM).decode(),
        server_cert_pem=server_cert,
        server_key_pem=server_key,
        client_cert_pem=client_cert,
        client_key_pem=client_key,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _server_command() -> list[str]:
    script = Path(sys.executable).with_name("pykmip-server")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from kmip.services.server.server import main; main()"]


class KmipServer:
    """One `pykmip-server` process (and its children) in a folder of its own."""

    def __init__(self, folder: Path, *, startup_timeout: float = 30.0) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki()
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "server.log"
        for name, content in (
            ("ca.pem", self.pki.ca_pem),
            ("server.pem", self.pki.server_cert_pem),
            ("server.key", self.pki.server_key_pem),
            ("client.pem", self.pki.client_cert_pem),
            ("client.key", self.pki.client_key_pem),
        ):
            path = folder / name
            path.write_text(content)
            path.chmod(0o600)
        (folder / "policies").mkdir(exist_ok=True)
        (folder / "server.conf").write_text(
            "[server]\n"
            f"hostname={HOST}\nport={self.port}\n"
            f"certificate_path={folder / 'server.pem'}\nkey_path={folder / 'server.key'}\n"
            f"ca_path={folder / 'ca.pem'}\nauth_suite=TLS1.2\n"
            f"policy_path={folder / 'policies'}\nenable_tls_client_auth=True\n"
            f"logging_level=INFO\ndatabase_path={folder / 'kmip.sqlite'}\n"
        )

    def __enter__(self) -> KmipServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def settings(self) -> dict[str, Any]:
        """What a tenant registers as the key manager's settings (not secret)."""
        return {
            "host": HOST,
            "port": self.port,
            "ca_pem": self.pki.ca_pem,
            "client_cert_pem": self.pki.client_cert_pem,
        }

    @property
    def credentials(self) -> dict[str, str]:
        return {"client_key_pem": self.pki.client_key_pem}

    def start(self) -> None:
        if self.process is not None:
            return
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.folder / "stdout.log", "ab") as output:
            self.process = subprocess.Popen(
                [*_server_command(), "-f", str(self.folder / "server.conf"), "-l", str(self.log)],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            text = (
                self.log.read_bytes()[offset:].decode(errors="replace") if self.log.exists() else ""
            )
            if "Address already in use" in text or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"pykmip-server did not start:\n{text[-2000:]}")
            if "Starting connection service" in text:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pykmip-server did not start within {self.startup_timeout:g} s")

    def stop(self) -> None:
        """Stop the server and every process it started (its whole process group)."""
        if self.process is None:
            return
        # SIGINT: pykmip-server stops in about a second (after SIGTERM it waits ten), unless a
        # client holds a connection open; then it is killed (SQLite survives that).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers left in the group
        self.process.wait()
        self.process = None

    def admin(self) -> KmipAdmin:
        """The customer's own client, administering keys in their key manager."""
        return KmipAdmin(self)


class KmipAdmin:
    """PyKMIP's high-level client as the customer uses it (same identity as KCM's client:
    the keys it creates are usable by KCM under the server's default policy)."""

    def __init__(self, server: KmipServer) -> None:
        from kmip.core import enums
        from kmip.pie.client import ProxyKmipClient

        self.enums = enums
        self.client = ProxyKmipClient(
            hostname=HOST,
            port=server.port,
            cert=str(server.folder / "client.pem"),
            key=str(server.folder / "client.key"),
            ca=str(server.folder / "ca.pem"),
            ssl_version="PROTOCOL_TLSv1_2",
            config_file=str(server.folder / "server.conf"),
            kmip_version=enums.KMIPVersion.KMIP_1_4,
        )

    def __enter__(self) -> KmipAdmin:
        self.client.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def create_aes_key(self, bits: int = 256, *, activate: bool = True) -> str:
        usage = [
            self.enums.CryptographicUsageMask.ENCRYPT,
            self.enums.CryptographicUsageMask.DECRYPT,
        ]
        key_id = str(
            self.client.create(
                self.enums.CryptographicAlgorithm.AES, bits, cryptographic_usage_mask=usage
            )
        )
        if activate:
            self.client.activate(key_id)
        return key_id

    def revoke(self, key_id: str) -> None:
        self.client.revoke(
            self.enums.RevocationReasonCode.KEY_COMPROMISE,
            key_id,
            revocation_message="revoked by the customer",
            compromise_occurrence_date=int(time.time()),
        )

    def destroy(self, key_id: str) -> None:
        with contextlib.suppress(Exception):
            self.revoke(key_id)  # an active key cannot be destroyed
        self.client.destroy(key_id)
