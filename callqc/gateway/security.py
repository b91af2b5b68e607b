"""Everything the gateway needs to be secure, built once from settings.

Transport (TLS / mTLS / loopback-only local credentials), the auth interceptor (deny by default),
per-batch access checks, person login (password + TOTP), and the hash-chained audit trail of
every access to audio and reports.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from callqc.security.audit import AuditLog, Outcome
from callqc.security.identity import Identity, current_identity_or_none
from callqc.security.interceptor import AuthDecision, AuthInterceptor
from callqc.security.login import LoginService, UserDirectory
from callqc.security.passwords import Passwords
from callqc.security.roles import AccessDenied, PermissionTable, check_batch_access
from callqc.security.tls import server_credentials
from callqc.security.tokens import TokenIssuer
from callqc.settings import Settings
from callqc.storage import ObjectStore

log = logging.getLogger(__name__)


def _actor(identity: Identity | None) -> tuple[str, str]:
    """Who acted, for the audit trail: subject and comma-joined roles (anonymous when unauthenticated)."""
    if identity is None:
        return "anonymous", ""
    return identity.subject, ",".join(sorted(identity.roles))


def server_transport(settings: Settings) -> grpc.ServerCredentials:
    """TLS (client certificates verified when sent), mTLS (required), or loopback-only local creds."""
    mode = settings.gateway.tls_mode
    if mode == "local":
        if settings.gateway.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("gateway.tls_mode=local is for loopback only; use tls or mtls on other addresses")
        return grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    tls = settings.security.tls
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError(
            f"gateway.tls_mode={mode} needs security.tls.cert_file and key_file "
            "(CALLQC_SECURITY__TLS__CERT_FILE / __KEY_FILE)"
        )
    require = mode == "mtls" or tls.require_client_auth
    if require and tls.client_ca_file is None:
        raise ValueError("mTLS needs security.tls.client_ca_file")
    return server_credentials(tls.cert_file, tls.key_file, tls.client_ca_file, require_client_auth=require)


@dataclass
class GatewaySecurity:
    permissions: PermissionTable
    issuer: TokenIssuer
    audit: AuditLog
    login: LoginService
    pool: ThreadPoolExecutor

    @classmethod
    def from_settings(cls, settings: Settings, store: ObjectStore) -> GatewaySecurity:
        sec = settings.security
        issuer = TokenIssuer.from_settings(sec.tokens)
        directory = UserDirectory(store, sec.login.users_prefix)
        return cls(
            permissions=PermissionTable.load(sec.permissions_file),
            issuer=issuer,
            audit=AuditLog.from_settings(store, sec.audit),
            login=LoginService(directory, Passwords(sec.argon2), issuer, sec.login),
            pool=ThreadPoolExecutor(2, thread_name_prefix="audit"),
        )

    def interceptor(self, settings: Settings) -> AuthInterceptor:
        return AuthInterceptor(
            self.permissions,
            self.issuer.verifier,
            settings.security.service_certs,
            on_decision=self._record_denial,
        )

    # -- audit -------------------------------------------------------------------------------
    def _record_denial(self, decision: AuthDecision) -> None:
        """Denied RPCs are audited (allowed ones are audited by the servicer where data is touched)."""
        if decision.allowed:
            return
        details = {"reason": decision.reason[:500], "peer": decision.peer, "code": str(decision.code)}
        who, roles = _actor(decision.identity)
        self.pool.submit(self._append_safely, who, roles, "rpc.denied", decision.method, Outcome.DENIED, details)

    def _append_safely(self, *args: Any) -> None:
        try:
            self.audit.append(*args)
        except Exception:  # the audit trail must never take the API down; the failure is logged loudly
            log.exception("audit append failed: %s", args[:4])

    async def record(self, action: str, resource: str, outcome: Outcome = Outcome.SUCCESS, **details: Any) -> None:
        """Append an audit record for the current caller (awaited: the access is logged before data leaves)."""
        who, roles = _actor(current_identity_or_none())
        await self._append(who, roles, action, resource, outcome, details)

    async def record_login(self, username: str, outcome: Outcome, **details: Any) -> None:
        """Logins are recorded under the name tried (there is no authenticated caller yet)."""
        name = username[:64]
        await self._append(name, "", "auth.login", f"user/{name}", outcome, details)

    async def _append(
        self, who: str, roles: str, action: str, resource: str, outcome: Outcome, details: dict[str, Any]
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(
            self.pool, self.audit.append, who, roles, action, resource, outcome, details
        )

    # -- authorisation ---------------------------------------------------------------------
    def may_access_batch(self, method: str, batch_id: str, owner: str) -> tuple[bool, str]:
        ident: Identity | None = current_identity_or_none()
        if ident is None:
            return False, "no authenticated caller"
        try:
            check_batch_access(self.permissions, method, ident, batch_id, owner)
        except AccessDenied as err:
            return False, str(err)
        return True, ""
