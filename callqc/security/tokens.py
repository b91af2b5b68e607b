"""Short-lived signed bearer tokens: Ed25519-signed JWTs (PyJWT, algorithm pinned to EdDSA).

Asymmetric on purpose: only the login service holds the private key; anything that merely
checks tokens (gateway replicas) needs the public key. Keys are generated at deploy time
(``generate_signing_key``) and loaded from a file or an environment variable, never the repo.
The ``kid`` header (a public-key fingerprint) lets a verifier accept old and new keys while
a signing key is rotated.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from callqc.security.identity import AuthError, AuthFailure, Identity, IdentityKind
from callqc.security.keyfiles import read_private, write_private
from callqc.security.roles import Role
from callqc.security.settings import TokenSettings

__all__ = [
    "AuthError",
    "AuthFailure",
    "Identity",
    "TokenIssuer",
    "TokenVerifier",
    "generate_signing_key",
    "key_id",
    "load_signing_key",
    "write_signing_key",
]

_ALGORITHM = "EdDSA"
_MAX_TOKEN_CHARS = 8192
_REQUIRED = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key (generate at deploy time; store as a secret)."""
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """Fingerprint of a public key, used as the JWT ``kid``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def write_signing_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as PKCS#8 PEM, creating the file with mode 0600."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(path, pem)


def load_signing_key(settings: TokenSettings) -> Ed25519PrivateKey:
    """Load the signing key from ``settings.signing_key_file``, else the env var it names."""
    if settings.signing_key_file is not None:
        pem = read_private(settings.signing_key_file, settings.require_private_key_mode_0600)
    else:
        value = os.environ.get(settings.signing_key_env)
        if not value:
            raise LookupError(f"no token signing key: set signing_key_file or ${settings.signing_key_env}")
        pem = value.encode()
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("token signing key must be Ed25519")
    return key


class TokenVerifier:
    """Checks tokens; holds public keys only."""

    def __init__(
        self,
        verify_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey],
        issuer: str,
        audience: str = "callqc-api",
        leeway_seconds: int = 30,
    ) -> None:
        keys = [verify_keys] if isinstance(verify_keys, Ed25519PublicKey) else list(verify_keys)
        if not keys:
            raise ValueError("at least one verify key is needed")
        self._keys = {key_id(k): k for k in keys}
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds

    def verify(self, token: str) -> Identity:
        """Return the token's ``Identity`` or raise ``AuthError`` saying exactly why not."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise AuthError(AuthFailure.MALFORMED, "token is empty or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthError(AuthFailure.MALFORMED, f"not a JWT: {exc}") from None
        if header.get("alg") != _ALGORITHM:
            raise AuthError(AuthFailure.BAD_SIGNATURE, f"algorithm {header.get('alg')!r} is not accepted")
        if not isinstance(header.get("kid"), str):
            raise AuthError(AuthFailure.MALFORMED, "token has no key id (kid)")
        key = self._keys.get(header["kid"])
        if key is None:
            raise AuthError(AuthFailure.BAD_SIGNATURE, "token was signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(AuthFailure.EXPIRED, "token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(AuthFailure.NOT_YET_VALID, "token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise AuthError(AuthFailure.WRONG_ISSUER, "token was issued by someone else") from None
        except jwt.InvalidAudienceError:
            raise AuthError(AuthFailure.WRONG_AUDIENCE, "token is meant for another audience") from None
        except jwt.InvalidSignatureError:
            raise AuthError(AuthFailure.BAD_SIGNATURE, "signature does not verify (forged?)") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(AuthFailure.BAD_SIGNATURE, "algorithm is not accepted") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(AuthFailure.MALFORMED, str(exc)) from None
        return _identity_from_claims(claims)


class TokenIssuer:
    """Issues (and, for convenience, verifies) tokens with one signing key."""

    def __init__(
        self,
        signing_key: Ed25519PrivateKey,
        issuer: str,
        ttl_seconds: int = 900,
        *,
        audience: str = "callqc-api",
        max_ttl_seconds: int = 3600,
        leeway_seconds: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < ttl_seconds <= max_ttl_seconds:
            raise ValueError(f"ttl_seconds must be in (0, {max_ttl_seconds}]")
        self._key = signing_key
        self._kid = key_id(signing_key.public_key())
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl_seconds
        self.max_ttl = max_ttl_seconds
        self._clock = clock
        self.verifier = TokenVerifier(signing_key.public_key(), issuer, audience, leeway_seconds)

    @classmethod
    def from_settings(cls, settings: TokenSettings, signing_key: Ed25519PrivateKey | None = None) -> TokenIssuer:
        """Build from settings, loading the key from file/env unless one is given."""
        return cls(
            signing_key or load_signing_key(settings),
            settings.issuer,
            settings.ttl_seconds,
            audience=settings.audience,
            max_ttl_seconds=settings.max_ttl_seconds,
            leeway_seconds=settings.leeway_seconds,
        )

    def issue(
        self,
        subject: str,
        roles: Iterable[Role | str],
        scopes: Iterable[str] = (),
        *,
        kind: IdentityKind = "person",
        batches: Iterable[str] = (),
        ttl_seconds: int | None = None,
    ) -> str:
        """A signed token for ``subject`` with ``roles``; lives ``ttl_seconds`` (default: configured)."""
        ttl = self.ttl if ttl_seconds is None else ttl_seconds
        if not 0 < ttl <= self.max_ttl:
            raise ValueError(f"ttl must be in (0, {self.max_ttl}]")
        if not subject:
            raise ValueError("subject is required")
        if kind not in ("person", "service"):
            raise ValueError(f"bad kind {kind!r}")
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "roles": sorted(Role(r).value for r in roles),
            "kind": kind,
            "scopes": sorted(set(scopes)),
            "batches": sorted(set(batches)),
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM, headers={"kid": self._kid})

    def verify(self, token: str) -> Identity:
        return self.verifier.verify(token)


def _identity_from_claims(claims: dict) -> Identity:
    def str_list(name: str) -> list[str]:
        value = claims.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AuthError(AuthFailure.MALFORMED, f"claim {name!r} must be a list of strings")
        return value

    sub, kind = claims.get("sub"), claims.get("kind")
    if not isinstance(sub, str) or not sub:
        raise AuthError(AuthFailure.MALFORMED, "claim 'sub' must be a non-empty string")
    if kind not in ("person", "service"):
        raise AuthError(AuthFailure.MALFORMED, "claim 'kind' must be 'person' or 'service'")
    try:
        roles = frozenset(Role(r) for r in str_list("roles"))
    except ValueError as exc:
        raise AuthError(AuthFailure.MALFORMED, f"unknown role: {exc}") from None
    return Identity(
        subject=sub,
        roles=roles,
        kind=kind,
        batches=frozenset(str_list("batches")),
        scopes=frozenset(str_list("scopes")),
        auth_method="token",
        token_id=str(claims["jti"]),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )
