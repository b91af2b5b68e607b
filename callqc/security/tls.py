"""TLS / mTLS for the gRPC gateway: credentials from PEM files, and a throwaway test PKI.

``generate_test_pki`` is for tests and local runs only (a CA made on the spot, short-lived,
ECDSA P-256); production certificates come from the bank's PKI and reach the pod as files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from callqc.security.keyfiles import write_private
from callqc.security.settings import TlsSettings


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPKI:
    """Paths of a generated test PKI."""

    __test__ = False  # not a pytest test class

    ca: CertPair
    server: CertPair
    clients: dict[str, CertPair] = field(default_factory=dict)
    node: CertPair | None = None  # server + client use, same SANs: Ray's mutual TLS between its processes


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(path, pem)


def _cert(
    subject_cn: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name | None,
    signing_key: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: list[x509.ObjectIdentifier] | None = None,
    issuer_public: ec.EllipticCurvePublicKey | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public or public_key), critical=False)
    )
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return b.sign(signing_key, hashes.SHA256())


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


def issue_node_certificate(ca: CertPair, hosts: Iterable[str], out_dir: Path, days: int = 30) -> CertPair:
    """Issue ``node.crt`` / ``node.key`` for one Ray pod from the cluster's Ray CA (SAN = ``hosts``, e.g. the
    pod IP; usable for server and client authentication). Run at pod start (``python -m
    callqc.security.node_cert``): Ray's peers check the certificate against the pod's own address."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the Ray CA key must be an EC (P-256) key")
    hosts = list(hosts)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = _cert(
        hosts[0], key.public_key(), ca_cert.subject, ca_key, days,
        sans=_sans(hosts), usage=usage, issuer_public=ca_key.public_key(),
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    pair = CertPair(out_dir / "node.crt", out_dir / "node.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair


def generate_test_pki(
    directory: Path,
    server_hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    clients: Iterable[str] = ("call-system",),
    days: int = 2,
    ca_name: str = "callqc test CA",
    node: bool = False,
) -> TestPKI:
    """Write a test CA, a server cert (SAN = ``server_hosts``) and client certs into ``directory``.

    Client certificates carry CN = SAN(DNS) = the client name. With ``node``, also ``node.crt``: the same
    SANs as the server, valid for both server and client authentication (every Ray process presents one
    certificate to its peers in both directions). Keys are written with mode 0600.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert(ca_name, ca_key.public_key(), None, ca_key, days, ca=True)

    def issue(name: str, sans: list[x509.GeneralName], usage: list[x509.ObjectIdentifier], stem: str) -> CertPair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(
            name, key.public_key(), ca_cert.subject, ca_key, days,
            sans=sans, usage=usage, issuer_public=ca_key.public_key(),
        )  # fmt: skip
        pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair

    ca = CertPair(directory / "ca.crt", directory / "ca.key")
    ca.cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca.key, ca_key)

    hosts = list(server_hosts)
    server_sans = _sans(hosts)
    server = issue(hosts[0], server_sans, [ExtendedKeyUsageOID.SERVER_AUTH], "server")
    client_pairs = {c: issue(c, [x509.DNSName(c)], [ExtendedKeyUsageOID.CLIENT_AUTH], f"client-{c}") for c in clients}
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    node_pair = issue(hosts[0], server_sans, both, "node") if node else None
    return TestPKI(ca=ca, server=server, clients=client_pairs, node=node_pair)


def server_credentials(
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None = None,
    require_client_auth: bool = False,
) -> grpc.ServerCredentials:
    """TLS server credentials; with ``require_client_auth`` clients must present a cert from the CA."""
    if require_client_auth and client_ca_file is None:
        raise ValueError("mTLS needs client_ca_file")
    pair = (Path(key_file).read_bytes(), Path(cert_file).read_bytes())
    roots = Path(client_ca_file).read_bytes() if client_ca_file else None
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=require_client_auth)


def server_credentials_from_settings(settings: TlsSettings) -> grpc.ServerCredentials:
    if settings.cert_file is None or settings.key_file is None:
        raise ValueError("TLS needs cert_file and key_file")
    return server_credentials(
        settings.cert_file, settings.key_file, settings.client_ca_file, settings.require_client_auth
    )


def channel_credentials(
    ca_file: Path, client_cert_file: Path | None = None, client_key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Client credentials trusting ``ca_file``; add a client cert + key for mTLS."""
    if (client_cert_file is None) != (client_key_file is None):
        raise ValueError("give both client_cert_file and client_key_file, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(client_key_file).read_bytes() if client_key_file else None,
        certificate_chain=Path(client_cert_file).read_bytes() if client_cert_file else None,
    )
