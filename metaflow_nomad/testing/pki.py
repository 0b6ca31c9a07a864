"""A throw-away PKI for mTLS test agents, like ``nomad tls cert create``.

Needs ``cryptography`` (the test extra), which is why it lives in test support.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentPki:
    """PEM files of a throw-away CA, a server certificate and client certificates."""

    directory: Path
    ca_file: Path
    ca_key_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def issue_client(self, name: str, expired: bool = False) -> tuple[Path, Path]:
        """Another client certificate from the same CA (``expired`` ended yesterday)."""
        return _issue(self, name, ["client.global.nomad"], expired=expired)

    def issue(self, name: str, dns_names: list[str]) -> tuple[Path, Path]:
        """A certificate for ``dns_names`` and 127.0.0.1, valid for server and client use.

        For services that need their own identity: a cluster's servers
        (``server.<region>.nomad``) and clients (``client.<region>.nomad``), whose RPC
        certificates must name their role, or a registry (``localhost``).
        """
        return _issue(self, name, dns_names)


def make_test_pki(directory: str | os.PathLike, region: str = "global") -> AgentPki:
    """A CA plus server and client certificates, like ``nomad tls cert create``.

    The server certificate names ``server.<region>.nomad`` (checked by agents with
    ``verify_server_hostname``), ``localhost`` and ``127.0.0.1`` (checked by HTTPS
    clients), and serves as the agent's RPC client certificate too.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metaflow-nomad test CA")])
    now = _utcnow()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _days(1))
        .not_valid_after(now + _days(30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    ca_file, ca_key_file = directory / "ca.pem", directory / "ca-key.pem"
    _write_pem(ca_file, ca_key_file, ca, key)
    pki = AgentPki(
        directory=directory,
        ca_file=ca_file,
        ca_key_file=ca_key_file,
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    _issue(pki, "server", [f"server.{region}.nomad", f"client.{region}.nomad", "localhost"])
    _issue(pki, "client", [f"client.{region}.nomad"])
    return pki


def _issue(pki: AgentPki, name: str, dns_names: list[str], expired: bool = False):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key_file.read_bytes(), password=None)
    key = _new_key()
    now = _utcnow()
    start, end = (now - _days(10), now - _days(1)) if expired else (now - _days(1), now + _days(30))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = pki.directory / f"{name}.pem", pki.directory / f"{name}-key.pem"
    _write_pem(cert_file, key_file, cert, key)
    return cert_file, key_file


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _utcnow():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc)


def _days(n: int):
    import datetime

    return datetime.timedelta(days=n)


def _write_pem(cert_file: Path, key_file: Path, cert, key) -> None:
    from cryptography.hazmat.primitives import serialization

    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
