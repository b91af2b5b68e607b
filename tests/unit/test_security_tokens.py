"""Signed short-lived tokens: round trip and every failure reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from callqc.security.identity import AuthError, AuthFailure
from callqc.security.roles import Role
from callqc.security.settings import TokenSettings
from callqc.security.tokens import (
    TokenIssuer,
    TokenVerifier,
    generate_signing_key,
    key_id,
    load_signing_key,
    write_signing_key,
)

KEY = generate_signing_key()


def issuer(clock_offset: float = 0.0, **kw: object) -> TokenIssuer:
    return TokenIssuer(KEY, "callqc", 300, clock=lambda: time.time() + clock_offset, **kw)  # type: ignore[arg-type]


def reason(token: str, verifier: TokenVerifier | None = None) -> AuthFailure:
    with pytest.raises(AuthError) as err:
        (verifier or issuer().verifier).verify(token)
    return err.value.reason


def test_round_trip() -> None:
    tok = issuer().issue("rev1", ["reviewer"], ["review:write"], batches=["b2", "b1"])
    ident = issuer().verify(tok)
    assert ident.subject == "rev1" and ident.roles == {Role.REVIEWER} and ident.kind == "person"
    assert ident.batches == {"b1", "b2"} and ident.scopes == {"review:write"} and ident.token_id
    assert 290 < ident.expires_at.timestamp() - time.time() <= 300  # type: ignore[union-attr]
    svc = issuer().verify(issuer().issue("cs-a", [Role.CALL_SYSTEM], kind="service"))
    assert svc.kind == "service" and svc.auth_method == "token"


def test_token_is_a_jwt_with_pinned_alg_and_kid() -> None:
    header = jwt.get_unverified_header(issuer().issue("a", ["auditor"]))
    assert header["alg"] == "EdDSA" and header["kid"] == key_id(KEY.public_key())


def test_expired() -> None:
    assert reason(issuer(-3600).issue("a", ["auditor"])) == AuthFailure.EXPIRED


def test_leeway() -> None:
    tok = TokenIssuer(KEY, "callqc", 10, clock=lambda: time.time() - 15).issue("a", ["auditor"])
    assert TokenVerifier(KEY.public_key(), "callqc", leeway_seconds=30).verify(tok).subject == "a"
    assert reason(tok, TokenVerifier(KEY.public_key(), "callqc", leeway_seconds=0)) == AuthFailure.EXPIRED


def test_not_yet_valid() -> None:
    assert reason(issuer(+3600).issue("a", ["auditor"])) == AuthFailure.NOT_YET_VALID


def test_wrong_issuer_and_audience() -> None:
    assert reason(TokenIssuer(KEY, "evil").issue("a", ["auditor"])) == AuthFailure.WRONG_ISSUER
    other_aud = TokenIssuer(KEY, "callqc", audience="other-api").issue("a", ["auditor"])
    assert reason(other_aud) == AuthFailure.WRONG_AUDIENCE


def test_forged_with_another_key() -> None:
    assert reason(TokenIssuer(generate_signing_key(), "callqc").issue("a", ["auditor"])) == AuthFailure.BAD_SIGNATURE


def test_forged_with_another_key_claiming_our_kid() -> None:
    other = generate_signing_key()
    claims = jwt.decode(issuer().issue("a", ["auditor"]), options={"verify_signature": False})
    tok = jwt.encode(claims, other, algorithm="EdDSA", headers={"kid": key_id(KEY.public_key())})
    assert reason(tok) == AuthFailure.BAD_SIGNATURE


def test_tampered_payload() -> None:
    head, body, sig = issuer().issue("a", ["auditor"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["roles"] = ["qc_manager"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert reason(f"{head}.{forged}.{sig}") == AuthFailure.BAD_SIGNATURE


def test_algorithm_confusion_and_none() -> None:
    claims = jwt.decode(issuer().issue("a", ["auditor"]), options={"verify_signature": False})
    pub = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key_id(KEY.public_key())}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    hs = signing_input + "." + b64(hmac.new(pub, signing_input.encode(), hashlib.sha256).digest())
    assert reason(hs) == AuthFailure.BAD_SIGNATURE
    none = jwt.encode(claims, None, algorithm="none", headers={"kid": key_id(KEY.public_key())})
    assert reason(none) == AuthFailure.BAD_SIGNATURE


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 9000, "eyJhbGciOiJFZERTQSJ9.e30."])
def test_malformed(token: str) -> None:
    assert reason(token) == AuthFailure.MALFORMED


def test_missing_signature_is_rejected() -> None:
    head, body, _sig = issuer().issue("a", ["auditor"]).split(".")
    assert reason(f"{head}.{body}.") in (AuthFailure.BAD_SIGNATURE, AuthFailure.MALFORMED)


@pytest.mark.parametrize(
    "patch",
    [{"exp": None}, {"sub": None}, {"roles": ["root"]}, {"roles": "reviewer"}, {"kind": "robot"}, {"batches": [1]}],
)
def test_bad_claims_are_malformed(patch: dict) -> None:
    claims = jwt.decode(issuer().issue("a", ["auditor"]), options={"verify_signature": False})
    for k, v in patch.items():
        if v is None:
            del claims[k]
        else:
            claims[k] = v
    tok = jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": key_id(KEY.public_key())})
    assert reason(tok) == AuthFailure.MALFORMED


def test_ttl_limits() -> None:
    with pytest.raises(ValueError):
        TokenIssuer(KEY, "callqc", 7200, max_ttl_seconds=3600)
    with pytest.raises(ValueError):
        issuer().issue("a", ["auditor"], ttl_seconds=4000)
    with pytest.raises(ValueError):
        issuer().issue("", ["auditor"])
    with pytest.raises(ValueError):
        issuer().issue("a", ["root"])


def test_verifier_accepts_old_and_new_key_during_rotation() -> None:
    new = generate_signing_key()
    verifier = TokenVerifier([KEY.public_key(), new.public_key()], "callqc")
    assert verifier.verify(issuer().issue("a", ["auditor"])).subject == "a"
    assert verifier.verify(TokenIssuer(new, "callqc").issue("b", ["auditor"])).subject == "b"


def test_key_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "signing.pem"
    write_signing_key(KEY, path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = load_signing_key(TokenSettings(signing_key_file=path))
    assert key_id(loaded.public_key()) == key_id(KEY.public_key())
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        load_signing_key(TokenSettings(signing_key_file=path))
    monkeypatch.setenv("CALLQC_TEST_KEY", path.read_text())
    env_key = load_signing_key(TokenSettings(signing_key_env="CALLQC_TEST_KEY"))
    assert key_id(env_key.public_key()) == key_id(KEY.public_key())
    monkeypatch.delenv("CALLQC_TEST_KEY")
    with pytest.raises(LookupError):
        load_signing_key(TokenSettings(signing_key_env="CALLQC_TEST_KEY"))
    issued = TokenIssuer.from_settings(TokenSettings(issuer="x", ttl_seconds=60), signing_key=KEY)
    assert issued.verify(issued.issue("a", ["auditor"])).subject == "a"
