"""Who is calling: the authenticated ``Identity``, auth failures, and the per-RPC context."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from callqc.security.roles import Role

IdentityKind = Literal["person", "service"]


class AuthFailure(StrEnum):
    """Why authentication failed (precise, for logs and the audit trail)."""

    MISSING = "missing_credentials"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    UNKNOWN_CERTIFICATE = "unknown_certificate"


class AuthError(Exception):
    """Authentication failed (maps to gRPC UNAUTHENTICATED)."""

    def __init__(self, reason: AuthFailure, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    ``batches`` lists batch ids assigned to a reviewer (empty otherwise); ``auth_method`` says
    whether a bearer token or a client certificate proved it.
    """

    subject: str
    roles: frozenset[Role]
    kind: IdentityKind = "person"
    batches: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    auth_method: Literal["token", "mtls"] = "token"
    token_id: str | None = None
    expires_at: datetime | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        subject: str,
        roles: Iterable[Role | str],
        kind: IdentityKind = "person",
        batches: Iterable[str] = (),
        **kw: object,
    ) -> Identity:
        """Convenience constructor that accepts plain strings and lists."""
        return cls(
            subject=subject,
            roles=frozenset(Role(r) for r in roles),
            kind=kind,
            batches=frozenset(batches),
            **kw,  # type: ignore[arg-type]
        )

    def has_role(self, role: Role) -> bool:
        return role in self.roles


_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("callqc_identity", default=None)


def current_identity() -> Identity:
    """The identity of the RPC being served; raises ``LookupError`` outside an authenticated RPC."""
    ident = _current.get()
    if ident is None:
        raise LookupError("no authenticated identity in this context (public RPC or no interceptor)")
    return ident


def current_identity_or_none() -> Identity | None:
    """Like ``current_identity`` but None for public RPCs."""
    return _current.get()


def set_identity(identity: Identity | None) -> contextvars.Token[Identity | None]:
    """Bind ``identity`` to the current context (used by the interceptor and tests)."""
    return _current.set(identity)


def reset_identity(token: contextvars.Token[Identity | None]) -> None:
    _current.reset(token)
