"""Test certificate authorities for database peers that require TLS (tests/support/peers.py).

    ca = TestCA(tmp_dir, "mlflow test CA")                  # a self-signed root, PEM at ca.cert_path
    server = ca.issue_server(tmp_dir / "server")            # for 127.0.0.1 and localhost (SAN)
    MariaDB(tls=server) / PostgreSQL(tls=server)            # TLS required; ca.cert_path verifies it

Made with `cryptography` in a temporary directory, valid from an hour ago for 30 days; nothing
here is a real credential. A server certificate carries its names as subjectAltName entries
(RFC 6125: clients match the SAN, never the CN, once a SAN is present): IP 127.0.0.1 and DNS
localhost by default, or `hosts` given (e.g. a name the clients never use, for a mismatch test).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@dataclass
class ServerTLS:
    """A server's certificate chain and key (PEM files) and the CA file that verifies it."""

    cert_path: Path
    key_path: Path
    ca_path: Path
    hosts: tuple[str, ...]


class TestCA:
    """A self-signed root CA (basicConstraints CA:TRUE, keyCertSign) kept in `directory`."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: str | os.PathLike, name: str = "mlflow test CA") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        self.directory = Path(directory)
        self.name = name
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        slug = "".join(c if c.isalnum() else "-" for c in name.lower())
        self.cert_path = _write(self.directory / f"{slug}.pem", _pem_cert(self.cert))

    def issue_server(self, directory: str | os.PathLike, hosts: tuple[str, ...] = LOOPBACK_NAMES) -> ServerTLS:
        """A server certificate (serverAuth) for `hosts` (IP addresses and DNS names), signed by this CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        directory = Path(directory)
        key = _key()
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return ServerTLS(cert_path=_write(directory / "server-cert.pem", _pem_cert(cert)),
                         key_path=_write(directory / "server-key.pem", _pem_key(key), 0o600),
                         ca_path=self.cert_path, hosts=tuple(hosts))
