"""A private CA and serving certificate for the admission webhook, made at start-up, kept in memory
and a private temporary directory.

The API server must trust the webhook's certificate; kopf registers the webhooks with a `caBundle`,
so a CA of our own is enough and nothing has to be provisioned beforehand (no cert-manager, no
Secret to rotate): every start makes a new CA, and the registration carries it. The CA's key is
thrown away once the serving certificate is signed. kopf's own generator needs extra packages
(certbuilder, oscrypto); `cryptography` is the field's standard and already a dependency of ours.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = timedelta(days=365)  # the process restarts long before; a restart makes a new pair


@dataclass(frozen=True)
class ServingCert:
    certfile: Path
    keyfile: Path
    ca_pem: bytes


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make(hosts: list[str], directory: Path | None = None) -> ServingCert:
    """A CA and a serving certificate for `hosts` (IP addresses or DNS names)."""
    now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate small clock differences
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("agentaccounts-webhook-ca"))
        .issuer_name(_name("agentaccounts-webhook-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    where = directory or Path(tempfile.mkdtemp(prefix="agentaccounts-webhook-"))  # mode 0700
    certfile, keyfile = where / "tls.crt", where / "tls.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ServingCert(certfile, keyfile, ca.public_bytes(serialization.Encoding.PEM))
