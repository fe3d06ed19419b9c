"""Certificates and keys for the local control plane, made fresh for every cluster.

The API server needs a serving certificate valid for 127.0.0.1/localhost, a CA that signs client
certificates (the admin is `O=system:masters`, the controller manager is
`CN=system:kube-controller-manager`), and a service-account signing key pair so the TokenRequest API
works. Nothing here is a secret worth keeping: it lives for one cluster, in a git-ignored directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = dt.timedelta(days=30)
AUDIT_CLIENT_CN = "kube-apiserver-audit"  # the operator's default audit_webhook_client_cn


@dataclass(frozen=True)
class Pki:
    dir: Path

    ca = property(lambda self: self.dir / "ca.crt")
    serving_cert = property(lambda self: self.dir / "apiserver.crt")
    serving_key = property(lambda self: self.dir / "apiserver.key")
    admin_cert = property(lambda self: self.dir / "admin.crt")
    admin_key = property(lambda self: self.dir / "admin.key")
    cm_cert = property(lambda self: self.dir / "controller-manager.crt")
    cm_key = property(lambda self: self.dir / "controller-manager.key")
    sa_key = property(lambda self: self.dir / "sa.key")
    sa_pub = property(lambda self: self.dir / "sa.pub")
    # The audit webhook: the client certificate the API server presents to the operator's endpoint,
    # the endpoint's serving certificate, and a certificate from the same CA with another subject
    # (tests show the endpoint refuses it).
    audit_client_cert = property(lambda self: self.dir / "audit-client.crt")
    audit_client_key = property(lambda self: self.dir / "audit-client.key")
    audit_serving_cert = property(lambda self: self.dir / "audit-receiver.crt")
    audit_serving_key = property(lambda self: self.dir / "audit-receiver.key")
    audit_other_cert = property(lambda self: self.dir / "audit-other.crt")
    audit_other_key = property(lambda self: self.dir / "audit-other.key")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
    )


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("agentaccounts-local-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(cert_path: Path, key_path: Path, subject: x509.Name, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(subject, ca_name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        if server:
            names: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)

    leaf(pki.serving_cert, pki.serving_key, _name("kube-apiserver"), server=True)
    leaf(pki.admin_cert, pki.admin_key, _name("agentaccounts-admin", "system:masters"), server=False)
    leaf(pki.cm_cert, pki.cm_key, _name("system:kube-controller-manager"), server=False)
    leaf(pki.audit_client_cert, pki.audit_client_key, _name(AUDIT_CLIENT_CN), server=False)
    leaf(pki.audit_serving_cert, pki.audit_serving_key, _name("agentaccounts-audit-webhook"), server=True)
    leaf(pki.audit_other_cert, pki.audit_other_key, _name("not-the-api-server"), server=False)
    # Service-account tokens are signed with RSA: every Kubernetes version accepts RS256.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def kubeconfig(server: str, pki: Pki, cert: Path, key: Path, user: str) -> str:
    """A kubeconfig (YAML is a superset of JSON, so json.dumps output is valid) using file paths."""
    import json

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": server, "certificate-authority": str(pki.ca)}}
            ],
            "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [
                {"name": "local", "context": {"cluster": "local", "user": user, "namespace": "default"}}
            ],
            "current-context": "local",
        },
        indent=2,
    )
