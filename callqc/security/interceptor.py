"""``grpc.aio`` server interceptor: authenticate, authorise (deny by default), expose identity.

Credentials, in order: an ``authorization: Bearer <token>`` header (if present it must be
valid, there is no silent fallback), else a verified client certificate (mTLS) whose SAN or
CN is mapped to a service identity. Then the permission table decides. Failures abort with
UNAUTHENTICATED or PERMISSION_DENIED and a clear message; on success the servicer reads the
caller with ``current_identity()``.

``intercept_service`` cannot see the servicer context (needed for the TLS peer), so the
interceptor returns a wrapped handler of the same streaming type whose first act is the
check; a denied call never reaches the servicer, not even its request stream.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from callqc.security.identity import (
    AuthError,
    AuthFailure,
    Identity,
    current_identity,
    current_identity_or_none,
    reset_identity,
    set_identity,
)
from callqc.security.roles import PermissionTable
from callqc.security.settings import ServiceCert
from callqc.security.tokens import TokenVerifier

__all__ = ["AuthDecision", "AuthInterceptor", "current_identity", "current_identity_or_none"]


@dataclass(frozen=True)
class AuthDecision:
    """What the interceptor decided for one RPC (for the audit trail / metrics)."""

    method: str
    allowed: bool
    identity: Identity | None
    code: grpc.StatusCode | None
    reason: str
    peer: str


class AuthInterceptor(aio.ServerInterceptor):
    """Authenticates every non-public RPC and checks it against a ``PermissionTable``.

    ``on_decision`` (optional, must not block) receives an ``AuthDecision`` per checked RPC.
    """

    def __init__(
        self,
        permissions: PermissionTable,
        verifier: TokenVerifier | None = None,
        service_certs: Iterable[ServiceCert] = (),
        on_decision: Callable[[AuthDecision], None] | None = None,
    ) -> None:
        self._table = permissions
        self._verifier = verifier
        self._certs = {c.match: c for c in service_certs}
        self._on_decision = on_decision

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # not implemented: gRPC answers UNIMPLEMENTED
            return None
        method = handler_call_details.method
        if self._table.is_public(method):
            return handler
        return self._wrap(handler, method, tuple(handler_call_details.invocation_metadata or ()))

    # ---- decision --------------------------------------------------------------------------
    async def _admit(self, method: str, metadata: Sequence[Any], context: aio.ServicerContext) -> Identity:
        """Return the caller's identity, or abort the RPC."""
        peer = context.peer() or ""
        try:
            identity = self._authenticate(metadata, context)
        except AuthError as exc:
            self._decide(method, False, None, grpc.StatusCode.UNAUTHENTICATED, exc.reason.value, peer)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"authentication failed: {exc}")
            raise  # unreachable: abort raises
        if not self._table.is_known(method):
            msg = f"{method} is not in the permission table (denied by default)"
        elif not self._table.allows(method, identity.roles):
            roles = ",".join(sorted(identity.roles)) or "none"
            allowed = ",".join(sorted(self._table.allowed_roles(method)))
            msg = f"role(s) {roles} of {identity.subject} may not call {method} (allowed: {allowed})"
        else:
            self._decide(method, True, identity, None, "allowed", peer)
            return identity
        self._decide(method, False, identity, grpc.StatusCode.PERMISSION_DENIED, msg, peer)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, msg)
        raise AssertionError("unreachable")

    def _decide(self, method: str, allowed: bool, ident: Identity | None, code: Any, reason: str, peer: str) -> None:
        if self._on_decision is not None:
            self._on_decision(AuthDecision(method, allowed, ident, code, reason, peer))

    def _authenticate(self, metadata: Sequence[Any], context: aio.ServicerContext) -> Identity:
        values = [v for k, v in metadata if k.lower() == "authorization"]
        if len(values) > 1:
            raise AuthError(AuthFailure.MALFORMED, "more than one authorization header")
        if values:
            value = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(AuthFailure.MALFORMED, "authorization header must be 'Bearer <token>'")
            if self._verifier is None:
                raise AuthError(AuthFailure.MISSING, "this server does not accept bearer tokens")
            return self._verifier.verify(token.strip())
        identity = self._certificate_identity(context)
        if identity is None:
            raise AuthError(
                AuthFailure.MISSING, "no credentials: send 'authorization: Bearer <token>' or a client certificate"
            )
        return identity

    def _certificate_identity(self, context: aio.ServicerContext) -> Identity | None:
        """Map a verified client certificate (SAN first, then CN) to a service identity."""
        auth = context.auth_context() or {}
        if auth.get("transport_security_type") != [b"ssl"]:
            return None
        sans = [v.decode() for v in auth.get("x509_subject_alternative_name", [])]
        cns = [v.decode() for v in auth.get("x509_common_name", [])]
        if not sans and not cns:
            return None  # TLS without a client certificate
        matched = {self._certs[n].subject: self._certs[n] for n in sans + cns if n in self._certs}
        if not matched:
            raise AuthError(
                AuthFailure.UNKNOWN_CERTIFICATE, f"client certificate {(cns or sans)[0]!r} is not mapped to a service"
            )
        if len(matched) > 1:
            raise AuthError(AuthFailure.UNKNOWN_CERTIFICATE, "client certificate maps to several services")
        cert = next(iter(matched.values()))
        return Identity(subject=cert.subject, roles=frozenset(cert.roles), kind="service", auth_method="mtls")

    # ---- handler wrapping ------------------------------------------------------------------
    def _wrap(self, handler: grpc.RpcMethodHandler, method: str, metadata: Sequence[Any]) -> grpc.RpcMethodHandler:
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.response_streaming:
            behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream

            async def streaming(request: Any, context: aio.ServicerContext) -> Any:
                token = set_identity(await self._admit(method, metadata, context))
                try:
                    result = behavior(request, context)
                    if inspect.isawaitable(result):  # coroutine style: writes via context.write
                        result = await result
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            yield item
                    elif result is not None:
                        for item in result:
                            yield item
                finally:
                    reset_identity(token)

            if handler.request_streaming:
                return grpc.stream_stream_rpc_method_handler(streaming, **kw)
            return grpc.unary_stream_rpc_method_handler(streaming, **kw)

        behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            token = set_identity(await self._admit(method, metadata, context))
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                reset_identity(token)

        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(unary, **kw)
        return grpc.unary_unary_rpc_method_handler(unary, **kw)
