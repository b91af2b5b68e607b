"""TLS and mTLS against a real grpc.aio server on 127.0.0.1, with a PKI generated at run time."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from callqc.security.identity import current_identity
from callqc.security.interceptor import AuthInterceptor
from callqc.security.roles import PermissionTable
from callqc.security.settings import ServiceCert, TlsSettings
from callqc.security.tls import (
    TestPKI,
    channel_credentials,
    generate_test_pki,
    server_credentials,
    server_credentials_from_settings,
)
from callqc.security.tokens import TokenIssuer, generate_signing_key

try:
    from test_security_helpers import AioServerThread
except ImportError:  # tests/unit imported as a package
    from tests.unit.test_security_helpers import AioServerThread

pytestmark = pytest.mark.integration  # TLS over a loopback socket

SUBMIT = "/callqc.v1.CallQC/SubmitBatch"
CLUSTER = "/callqc.v1.Admin/ClusterStatus"


async def _whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    ident = current_identity()
    return json.dumps({"sub": ident.subject, "kind": ident.kind, "via": ident.auth_method}).encode()


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"echo:" + request


def _handlers(authenticated: bool) -> list[grpc.GenericRpcHandler]:
    fn = _whoami if authenticated else _echo
    return [
        grpc.method_handlers_generic_handler(
            "callqc.v1.CallQC", {"SubmitBatch": grpc.unary_unary_rpc_method_handler(fn)}
        ),
        grpc.method_handlers_generic_handler(
            "callqc.v1.Admin", {"ClusterStatus": grpc.unary_unary_rpc_method_handler(fn)}
        ),
    ]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return generate_test_pki(tmp_path_factory.mktemp("pki"), clients=("call-system", "stranger"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return generate_test_pki(tmp_path_factory.mktemp("other-pki"), clients=("call-system",))


def _call(target: str, creds: grpc.ChannelCredentials | None, method: str = SUBMIT, metadata=()) -> bytes:
    ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with ch:
        return ch.unary_unary(method)(b"hi", timeout=3, metadata=metadata)


def test_pki_files(pki: TestPKI) -> None:
    for pair in [pki.ca, pki.server, *pki.clients.values()]:
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in pair.key.read_bytes()
    server = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    server.verify_directly_issued_by(ca)


def test_tls_round_trip_and_plaintext_refused(pki: TestPKI) -> None:
    creds = server_credentials(pki.server.cert, pki.server.key)
    with AioServerThread(_handlers(False), credentials=creds) as srv:
        assert _call(srv.target, channel_credentials(pki.ca.cert)) == b"echo:hi"
        with pytest.raises(grpc.RpcError) as err:
            _call(srv.target, None)  # plaintext client against the TLS port
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_refuses_server_from_unknown_ca(pki: TestPKI, other_pki: TestPKI) -> None:
    creds = server_credentials(pki.server.cert, pki.server.key)
    with AioServerThread(_handlers(False), credentials=creds) as srv:
        with pytest.raises(grpc.RpcError) as err:
            _call(srv.target, channel_credentials(other_pki.ca.cert))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def mtls_server(pki: TestPKI):
    settings = TlsSettings(
        cert_file=pki.server.cert, key_file=pki.server.key, client_ca_file=pki.ca.cert, require_client_auth=True
    )
    interceptor = AuthInterceptor(
        PermissionTable.load(),
        TokenIssuer(generate_signing_key(), "callqc").verifier,
        service_certs=[ServiceCert(match="call-system", subject="callsys-a")],
    )
    with AioServerThread(_handlers(True), [interceptor], server_credentials_from_settings(settings)) as srv:
        yield srv


def _client(pki: TestPKI, name: str) -> grpc.ChannelCredentials:
    return channel_credentials(pki.ca.cert, pki.clients[name].cert, pki.clients[name].key)


def test_mtls_maps_certificate_to_call_system(pki: TestPKI, mtls_server: AioServerThread) -> None:
    reply = json.loads(_call(mtls_server.target, _client(pki, "call-system")))
    assert reply == {"sub": "callsys-a", "kind": "service", "via": "mtls"}


def test_mtls_certificate_role_is_enforced(pki: TestPKI, mtls_server: AioServerThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(mtls_server.target, _client(pki, "call-system"), CLUSTER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_mtls_unmapped_certificate_is_unauthenticated(pki: TestPKI, mtls_server: AioServerThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(mtls_server.target, _client(pki, "stranger"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "stranger" in err.value.details()


def test_mtls_bad_token_does_not_fall_back_to_certificate(pki: TestPKI, mtls_server: AioServerThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(mtls_server.target, _client(pki, "call-system"), metadata=[("authorization", "Bearer junk")])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_mtls_refuses_client_without_certificate(pki: TestPKI, mtls_server: AioServerThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(mtls_server.target, channel_credentials(pki.ca.cert))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_client_certificate_from_another_ca(
    pki: TestPKI, other_pki: TestPKI, mtls_server: AioServerThread
) -> None:
    creds = channel_credentials(
        pki.ca.cert, other_pki.clients["call-system"].cert, other_pki.clients["call-system"].key
    )
    with pytest.raises(grpc.RpcError) as err:
        _call(mtls_server.target, creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_without_client_cert_or_token_is_unauthenticated(pki: TestPKI) -> None:
    interceptor = AuthInterceptor(PermissionTable.load(), None, [ServiceCert(match="call-system", subject="a")])
    creds = server_credentials(pki.server.cert, pki.server.key)
    with AioServerThread(_handlers(True), [interceptor], creds) as srv:
        with pytest.raises(grpc.RpcError) as err:
            _call(srv.target, channel_credentials(pki.ca.cert))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_credential_argument_checks(pki: TestPKI, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="client_ca_file"):
        server_credentials(pki.server.cert, pki.server.key, require_client_auth=True)
    with pytest.raises(ValueError, match="both"):
        channel_credentials(pki.ca.cert, client_cert_file=pki.server.cert)
    with pytest.raises(ValueError, match="cert_file"):
        server_credentials_from_settings(TlsSettings())


def test_optional_client_auth_never_trusts_an_unverified_certificate(pki: TestPKI, other_pki: TestPKI) -> None:
    """Without require_client_auth a client cert from a foreign CA (same CN) must not map to a service."""
    interceptor = AuthInterceptor(PermissionTable.load(), None, [ServiceCert(match="call-system", subject="a")])
    creds = server_credentials(pki.server.cert, pki.server.key, pki.ca.cert, require_client_auth=False)
    forged = channel_credentials(
        pki.ca.cert, other_pki.clients["call-system"].cert, other_pki.clients["call-system"].key
    )
    with AioServerThread(_handlers(True), [interceptor], creds) as srv:
        with pytest.raises(grpc.RpcError) as err:
            _call(srv.target, forged)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_ray_node_certificate_from_the_cluster_ca_serves_and_authenticates(tmp_path: Path) -> None:
    """What the Ray pods' init container issues: SAN = the pod IP, both server and client use, from the CA."""
    import typer
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from typer.testing import CliRunner

    from callqc.security.node_cert import main

    pki = generate_test_pki(tmp_path / "ca")
    out = tmp_path / "tls"
    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(
        app,
        ["--ca-dir", str(tmp_path / "ca"), "--out", str(out), "--host", "10.1.2.3", "--host", "localhost"],
    )
    assert result.exit_code == 0, result.output
    cert = x509.load_pem_x509_certificate((out / "node.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (out / "ca.crt").read_bytes() == pki.ca.cert.read_bytes()
    assert (out / "node.key").stat().st_mode & 0o077 == 0
