"""A local certificate authority and a server certificate, generated on first start.

Clients trust Shoal through ``REQUESTS_CA_BUNDLE=<state>/tls/ca.pem``; the leaf carries SANs for
``127.0.0.1``, ``localhost`` and any extra host the operator names. Existing files are never replaced, so a
CA users already trust stays valid across restarts.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_tls(directory: Path, extra_hosts: tuple[str, ...] = ()) -> TlsFiles:
    """Create ``ca.pem``, ``server.pem`` and ``server-key.pem`` in ``directory`` unless they exist. The CA is
    never replaced; the server certificate is issued again (by the same CA) when it lacks one of
    ``extra_hosts`` (e.g. the gateway address machines reach Shoal at)."""
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    ca_key_file = directory / "ca-key.pem"
    if files.ca_cert.exists() and files.cert.exists() and files.key.exists():
        if _has_hosts(files.cert, extra_hosts) or not ca_key_file.exists():
            return files
        ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        _issue_server(files, ca_key, ca_cert, extra_hosts)
        return files
    now = datetime.now(UTC) - timedelta(minutes=5)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Shoal local CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Shoal")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(ca_key_file, _key_pem(ca_key))
    _issue_server(files, ca_key, ca_cert, extra_hosts)
    return files


def _has_hosts(cert_file: Path, hosts: tuple[str, ...]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
    return all(str(ipaddress.ip_address(h)) in have if _is_ip(h) else h in have for h in hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _issue_server(files: TlsFiles, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                  extra_hosts: tuple[str, ...]) -> None:
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in extra_hosts:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)) if _is_ip(host) else x509.DNSName(host))
    _issue_leaf(files.cert, files.key, ca_key, ca_cert, "localhost", sans)


def _issue_leaf(cert_file: Path, key_file: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                common_name: str, sans: list[x509.GeneralName]) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_file, _key_pem(key))
    tmp = cert_file.with_name(cert_file.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_file)


_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def host_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """A certificate (with the CA after it) and key for one DNS name, issued by the local CA of ``directory``
    (made by :func:`ensure_tls`) and kept in ``directory/hosts``: what ``shoal proxy`` shows a client for
    ``management.azure.com`` and the other Azure names it answers for. Issued once per name."""
    host = host.lower()
    if not _HOSTNAME.match(host) or len(host) > 253:
        raise ValueError(f"not a DNS name: {host!r}")
    cert_file, key_file = directory / "hosts" / f"{host}.pem", directory / "hosts" / f"{host}-key.pem"
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    (directory / "hosts").mkdir(mode=0o700, exist_ok=True)
    _issue_leaf(cert_file, key_file, ca_key, ca_cert, host, [x509.DNSName(host)])
    return cert_file, key_file
