"""AuthInterceptor against a REAL grpc.aio server on 127.0.0.1 with a tiny generic test service."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import grpc
import jwt
import pytest

from callqc.security.identity import current_identity, current_identity_or_none
from callqc.security.interceptor import AuthDecision, AuthInterceptor
from callqc.security.roles import PermissionTable, Role
from callqc.security.tokens import TokenIssuer, generate_signing_key

try:
    from test_security_helpers import AioServerThread
except ImportError:  # tests/unit imported as a package
    from tests.unit.test_security_helpers import AioServerThread

pytestmark = pytest.mark.integration  # gRPC over a loopback socket (still fast: ~1 s in all)

# Written out independently of permissions.yaml, so a wrong edit there fails here.
CALLQC = "/callqc.v1.CallQC/"
EXPECTED: dict[str, set[str]] = {
    CALLQC + "SubmitBatch": {"call_system"},
    CALLQC + "UploadAudio": {"call_system"},
    CALLQC + "GetBatch": {"call_system", "reviewer", "qc_manager"},
    CALLQC + "WatchBatch": {"call_system", "reviewer", "qc_manager"},
    CALLQC + "GetReport": {"call_system", "reviewer", "qc_manager"},
    CALLQC + "GetAudio": {"call_system", "reviewer", "qc_manager"},
    "/callqc.v1.Review/ListAssignments": {"reviewer", "qc_manager"},
    "/callqc.v1.Review/GetReviewItem": {"reviewer", "qc_manager"},
    "/callqc.v1.Review/SubmitReview": {"reviewer", "qc_manager"},
    "/callqc.v1.Review/AssignReviewer": {"qc_manager"},
    "/callqc.v1.Review/AppealReview": {"qc_manager"},
    "/callqc.v1.Review/FinalizeReview": {"qc_manager"},
    "/callqc.v1.Review/GetRawTranscript": {"qc_manager"},
    "/callqc.v1.Review/ExportFindings": {"qc_manager"},
    "/callqc.v1.Review/GetCoverage": {"qc_manager", "operator"},
    "/callqc.v1.Admin/ListRulePacks": {"qc_manager"},
    "/callqc.v1.Admin/PutRulePack": {"qc_manager"},
    "/callqc.v1.Admin/ClusterStatus": {"operator"},
    "/callqc.v1.Admin/ScaleDeployment": {"operator"},
    "/callqc.v1.Admin/RetryFailed": {"operator"},
    "/callqc.v1.Admin/Drain": {"operator"},
    "/callqc.v1.Admin/ReadAuditLog": {"auditor"},
    "/callqc.v1.Admin/VerifyAuditLog": {"auditor"},
}
PUBLIC = {CALLQC + "Login", "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
UNLISTED = CALLQC + "DeleteEverything"  # implemented by the server, absent from the table
CLIENT_STREAMING = {CALLQC + "UploadAudio"}
SERVER_STREAMING = {CALLQC + "WatchBatch", "/grpc.health.v1.Health/Watch"}
ROLES = [r.value for r in Role]

CALLS: Counter[str] = Counter()


def _identity_json() -> bytes:
    ident = current_identity_or_none()
    if ident is None:
        return b'{"public": true}'
    return json.dumps(
        {"sub": ident.subject, "roles": sorted(ident.roles), "kind": ident.kind, "via": ident.auth_method}
    ).encode()


def _handlers() -> list[grpc.GenericRpcHandler]:
    def unary(method: str):
        async def behavior(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            CALLS[method] += 1
            await asyncio.sleep(0.005)  # let concurrent RPCs interleave
            return _identity_json()

        return grpc.unary_unary_rpc_method_handler(behavior)

    def client_stream(method: str):
        async def behavior(requests, context: grpc.aio.ServicerContext) -> bytes:
            CALLS[method] += 1
            size = 0
            async for chunk in requests:
                size += len(chunk)
            return _identity_json()[:-1] + f', "size": {size}}}'.encode()

        return grpc.stream_unary_rpc_method_handler(behavior)

    def server_stream(method: str):
        async def behavior(request: bytes, context: grpc.aio.ServicerContext):
            CALLS[method] += 1
            for _ in range(2):
                await asyncio.sleep(0)
                yield _identity_json()

        return grpc.unary_stream_rpc_method_handler(behavior)

    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = defaultdict(dict)
    for full in [*EXPECTED, *PUBLIC, UNLISTED]:
        service, name = full[1:].split("/")
        if full in CLIENT_STREAMING:
            by_service[service][name] = client_stream(full)
        elif full in SERVER_STREAMING:
            by_service[service][name] = server_stream(full)
        else:
            by_service[service][name] = unary(full)
    return [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]


KEY = generate_signing_key()
ISSUER = TokenIssuer(KEY, "callqc-test", 300)
DECISIONS: list[AuthDecision] = []


@pytest.fixture(scope="module")
def channel():
    interceptor = AuthInterceptor(PermissionTable.load(), ISSUER.verifier, on_decision=DECISIONS.append)
    with AioServerThread(_handlers(), [interceptor]) as srv, grpc.insecure_channel(srv.target) as ch:
        yield ch


def call(ch: grpc.Channel, method: str, token: str | None = None, metadata=()) -> list[dict]:
    """Invoke ``method`` with the right streaming shape; returns decoded response(s)."""
    md = list(metadata)
    if token is not None:
        md.append(("authorization", f"Bearer {token}"))
    if method in CLIENT_STREAMING:
        out = [ch.stream_unary(method)(iter([b"abc", b"defg"]), metadata=md, timeout=5)]
    elif method in SERVER_STREAMING:
        out = list(ch.unary_stream(method)(b"req", metadata=md, timeout=5))
    else:
        out = [ch.unary_unary(method)(b"req", metadata=md, timeout=5)]
    return [json.loads(x) for x in out]


def test_expected_matrix_covers_the_whole_permission_table() -> None:
    table = PermissionTable.load()
    assert set(table.methods) == set(EXPECTED) | PUBLIC
    for method, roles in EXPECTED.items():
        assert {r.value for r in table.allowed_roles(method)} == roles, method


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_every_method_for_every_role(channel: grpc.Channel, method: str, role: str) -> None:
    token = ISSUER.issue(f"user-{role}", [role])
    before = CALLS[method]
    if role in EXPECTED[method]:
        responses = call(channel, method, token)
        assert responses and all(r["sub"] == f"user-{role}" and r["roles"] == [role] for r in responses)
        assert CALLS[method] == before + 1
        if method in CLIENT_STREAMING:
            assert responses[0]["size"] == 7
    else:
        with pytest.raises(grpc.RpcError) as err:
            call(channel, method, token)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert method in err.value.details() and role in err.value.details()
        assert CALLS[method] == before, "a denied call must not reach the servicer"


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_every_method_without_token_is_unauthenticated(channel: grpc.Channel, method: str) -> None:
    before = CALLS[method]
    with pytest.raises(grpc.RpcError) as err:
        call(channel, method)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no credentials" in err.value.details()
    assert CALLS[method] == before


@pytest.mark.parametrize("method", sorted(PUBLIC))
def test_public_methods_need_no_token(channel: grpc.Channel, method: str) -> None:
    assert all(r == {"public": True} for r in call(channel, method))


def test_operator_never_reaches_calls_reports_or_reviews() -> None:
    table = PermissionTable.load()
    for method in table.methods:
        if table.allows(method, [Role.OPERATOR]) and not table.is_public(method):
            if method == "/callqc.v1.Review/GetCoverage":  # counts only (received / inspected), no personal data
                continue
            assert method.startswith("/callqc.v1.Admin/"), method
            assert "Report" not in method and "Audit" not in method and "RulePack" not in method


def test_unlisted_method_is_denied_by_default(channel: grpc.Channel) -> None:
    for role in ROLES:
        with pytest.raises(grpc.RpcError) as err:
            call(channel, UNLISTED, ISSUER.issue("x", [role]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "denied by default" in err.value.details()
    assert CALLS[UNLISTED] == 0


def test_unimplemented_method(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(channel, CALLQC + "NoSuchRpc", ISSUER.issue("x", ["qc_manager"]))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_token_without_roles_is_denied(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(channel, CALLQC + "GetBatch", ISSUER.issue("nobody", []))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _bad_tokens() -> dict[str, tuple[str, str]]:
    good = ISSUER.issue("svc", ["call_system"])
    head, _body, sig = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    claims["roles"] = ["qc_manager", "call_system"]
    elevated_body = jwt.encode(claims, "x" * 32, algorithm="HS256").split(".")[1]
    past = TokenIssuer(KEY, "callqc-test", 60, clock=lambda: time.time() - 3600)
    future = TokenIssuer(KEY, "callqc-test", 60, clock=lambda: time.time() + 3600)
    stranger = TokenIssuer(generate_signing_key(), "callqc-test")
    return {
        "expired": (past.issue("svc", ["call_system"]), "expired"),
        "not_yet_valid": (future.issue("svc", ["call_system"]), "not_yet_valid"),
        "forged_other_key": (stranger.issue("svc", ["call_system"]), "bad_signature"),
        "tampered_claims": (f"{head}.{elevated_body}.{sig}", "bad_signature"),
        "wrong_issuer": (TokenIssuer(KEY, "someone-else").issue("svc", ["call_system"]), "wrong_issuer"),
        "alg_none": (jwt.encode(claims, None, algorithm="none"), "bad_signature"),
        "garbage": ("not-a-token", "malformed"),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_bad_tokens()))
def test_bad_tokens_are_unauthenticated(channel: grpc.Channel, case: str) -> None:
    token, reason = _bad_tokens()[case]
    before = CALLS[CALLQC + "SubmitBatch"]
    with pytest.raises(grpc.RpcError) as err:
        call(channel, CALLQC + "SubmitBatch", token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in err.value.details()
    assert CALLS[CALLQC + "SubmitBatch"] == before


@pytest.mark.parametrize(
    "header",
    [("authorization", "Basic dXNlcjpwYXNz"), ("authorization", "Bearer "), ("authorization", "token-only")],
)
def test_malformed_authorization_header(channel: grpc.Channel, header: tuple[str, str]) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(channel, CALLQC + "SubmitBatch", metadata=[header])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer <token>" in err.value.details()


def test_two_authorization_headers_are_rejected(channel: grpc.Channel) -> None:
    tok = ISSUER.issue("svc", ["call_system"])
    md = [("authorization", f"Bearer {tok}"), ("authorization", f"Bearer {tok}")]
    with pytest.raises(grpc.RpcError) as err:
        call(channel, CALLQC + "SubmitBatch", metadata=md)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_identity_is_per_call_under_concurrency(channel: grpc.Channel) -> None:
    subjects = [f"svc-{i}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda s: call(channel, CALLQC + "GetBatch", ISSUER.issue(s, ["call_system"]))[0], subjects)
        )
    assert [r["sub"] for r in results] == subjects


def test_decisions_are_reported() -> None:
    # runs after the RPC tests in this module (pytest keeps file order)
    assert any(d.allowed and d.identity is not None for d in DECISIONS)
    denied = [d for d in DECISIONS if d.code == grpc.StatusCode.PERMISSION_DENIED]
    unauth = [d for d in DECISIONS if d.code == grpc.StatusCode.UNAUTHENTICATED]
    assert denied and all(d.identity is not None for d in denied)
    assert {"expired", "bad_signature", "missing_credentials"} <= {d.reason for d in unauth}


def test_current_identity_outside_an_rpc_raises() -> None:
    with pytest.raises(LookupError):
        current_identity()


class _FakeContext:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_certificate_mapping_san_cn_and_ambiguity() -> None:
    from callqc.security.identity import AuthError
    from callqc.security.settings import ServiceCert

    icpt = AuthInterceptor(
        PermissionTable.load(),
        None,
        [ServiceCert(match="spiffe://bank/callsys-a", subject="callsys-a"), ServiceCert(match="cs-b", subject="b")],
    )
    ssl = {"transport_security_type": [b"ssl"]}
    by_san = _FakeContext(
        {**ssl, "x509_subject_alternative_name": [b"spiffe://bank/callsys-a"], "x509_common_name": [b"x"]}
    )
    ident = icpt._certificate_identity(by_san)  # type: ignore[arg-type]
    assert ident is not None and ident.subject == "callsys-a" and ident.roles == {Role.CALL_SYSTEM}
    by_cn = _FakeContext({**ssl, "x509_common_name": [b"cs-b"]})
    assert icpt._certificate_identity(by_cn).subject == "b"  # type: ignore[arg-type,union-attr]
    both = _FakeContext(
        {**ssl, "x509_subject_alternative_name": [b"spiffe://bank/callsys-a"], "x509_common_name": [b"cs-b"]}
    )
    with pytest.raises(AuthError, match="several"):
        icpt._certificate_identity(both)  # type: ignore[arg-type]
    assert icpt._certificate_identity(_FakeContext({})) is None  # type: ignore[arg-type]
    assert icpt._certificate_identity(_FakeContext(ssl)) is None  # type: ignore[arg-type]
    insecure = _FakeContext({"transport_security_type": [b"insecure"], "x509_common_name": [b"cs-b"]})
    assert icpt._certificate_identity(insecure) is None  # type: ignore[arg-type]
