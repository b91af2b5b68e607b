"""The reviewer page as a Starlette application: HTML shells, a JSON API, signed audio with Range.

Who may see what comes from the same permission table as the gRPC gateway (``permissions.yaml``):

    batch page / API      /callqc.v1.CallQC/GetBatch          (reviewer: assigned, qc_manager: any)
    call page / API       /callqc.v1.Review/GetReviewItem     (reviewer: assigned, qc_manager: any)
    audio URL issued      GetReviewItem and /callqc.v1.CallQC/GetAudio
    confirm/reject/add/   /callqc.v1.Review/SubmitReview      (reviewer: assigned, qc_manager: any)
      complete
    appeal / finalize     /callqc.v1.Review/AppealReview, FinalizeReview (qc_manager)

so an operator or auditor is refused everything, and a reviewer only sees batches assigned to them
(the ``batches`` claim of their token, or the batch's live assignment record, as in the gateway).
People authenticate with the bearer token of ``callqc login`` (``Authorization: Bearer``) or through
the login form, which puts the same token in an HttpOnly, SameSite=Strict cookie. Every read of a
report or audio, every audio URL issued, every review action and every refusal is appended to the
audit trail the gateway writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callqc.gateway.convert import valid_batch_id, valid_call_id
from callqc.jobs import BatchManifest, JobStore
from callqc.models import CallState
from callqc.report import Report
from callqc.review import (
    ACTION_ROLES,
    ActionKind,
    ReviewConflict,
    ReviewError,
    ReviewForbidden,
    assignments_of,
    reviewers_of,
)
from callqc.security.audit import AuditLog, Outcome
from callqc.security.identity import AuthError, AuthFailure, Identity
from callqc.security.login import LoginFailed, LoginService, UserDirectory
from callqc.security.passwords import Passwords
from callqc.security.roles import AccessDenied, PermissionTable, Role, check_batch_access
from callqc.security.tokens import TokenIssuer
from callqc.settings import Settings
from callqc.storage import ObjectNotFound, ObjectStore, open_store, read_maybe_plaintext
from callqc.web import review_bridge, views
from callqc.web.signing import AudioSigner, RangeNotSatisfiable, SignatureInvalid, parse_range

log = logging.getLogger(__name__)
T = TypeVar("T")
STATIC = Path(__file__).resolve().parent / "static"

GET_BATCH = "/callqc.v1.CallQC/GetBatch"
GET_REVIEW_ITEM = "/callqc.v1.Review/GetReviewItem"
GET_AUDIO = "/callqc.v1.CallQC/GetAudio"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; media-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # signed audio URLs never leave in a Referer
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
_AUDIO_TYPES = {b"RIFF": "audio/wav", b"RF64": "audio/wav", b"fLaC": "audio/flac", b"OggS": "audio/ogg"}


class Denied(Exception):
    """Answer with ``status`` (401 / 403 / 404) and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SecurityHeaders:
    """Pure ASGI middleware: CSP, nosniff, no-referrer, no caching on every response."""

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AudioCache:
    """Decrypted audio of recently opened calls, so the browser's many Range reads decrypt once.

    Bounded in bytes; an entry lives no longer than a signed URL does.
    """

    def __init__(self, max_bytes: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if self._clock() - item[0] > self.ttl:
                self._drop(key)
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = (self._clock(), data)
            self._size += len(data)
            while self._size > self.max_bytes:
                self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        _, data = self._items.pop(key)
        self._size -= len(data)


def audio_type(data: bytes) -> str:
    """MIME type from the leading bytes (the browser must not guess: nosniff)."""
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return _AUDIO_TYPES.get(data[:4], "application/octet-stream")


def _actor(identity: Identity | None, fallback: str = "anonymous") -> tuple[str, str]:
    if identity is None:
        return fallback, ""
    return identity.subject, ",".join(sorted(identity.roles))


class ReviewerWeb:
    """State of the web application: store, permission table, token checks, audit, audio signing."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        *,
        issuer: TokenIssuer | None = None,
        signer: AudioSigner | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        sec = settings.security
        self.settings = settings
        self.web = settings.web
        self.store = store
        self.jobs = JobStore(store, settings.s3, settings.web.io_threads)
        self.permissions = PermissionTable.load(sec.permissions_file)
        self.issuer = issuer or TokenIssuer.from_settings(sec.tokens)
        self.verifier = self.issuer.verifier
        self.login_service = LoginService(
            UserDirectory(store, sec.login.users_prefix), Passwords(sec.argon2), self.issuer, sec.login
        )
        self.audit = audit or AuditLog.from_settings(store, sec.audit)
        self.signer = signer or AudioSigner.from_file(
            settings.web.audio_signing_key_file, settings.web.audio_url_ttl_seconds, clock
        )
        self.audio_cache = AudioCache(settings.web.audio_cache_bytes, settings.web.audio_url_ttl_seconds)
        self.secure_cookie = settings.web.tls_mode == "tls"
        self._pool = ThreadPoolExecutor(settings.web.io_threads, thread_name_prefix="web-io")
        # per-call reads of a batch page fan out here, never on _pool (whose threads would wait on themselves)
        self._fanout = ThreadPoolExecutor(settings.web.io_threads, thread_name_prefix="web-fanout")
        self._audit_pool = ThreadPoolExecutor(1, thread_name_prefix="web-audit")  # keeps the chain in order

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- audit ----------------------------------------------------------------------------------
    async def record(
        self,
        identity: Identity | None,
        action: str,
        resource: str,
        outcome: Outcome = Outcome.SUCCESS,
        actor: str = "anonymous",
        **details: Any,
    ) -> None:
        """Append an audit record (awaited: an access is logged before its data leaves)."""
        who, roles = _actor(identity, actor)
        details = {"via": "web", **details}
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._audit_pool, self.audit.append, who, roles, action, resource, outcome, details)

    # -- authentication and authorisation -------------------------------------------------------
    def identity_of(self, request: Request) -> Identity:
        """The caller from ``Authorization: Bearer`` (if sent it must be valid), else the session cookie."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(AuthFailure.MALFORMED, "authorization header must be 'Bearer <token>'")
            return self.verifier.verify(token.strip())
        token = request.cookies.get(self.web.cookie_name)
        if not token:
            raise AuthError(AuthFailure.MISSING, "not logged in")
        return self.verifier.verify(token)

    async def authorise(self, request: Request, method: str, batch_id: str) -> tuple[Identity, BatchManifest]:
        """The caller and the batch, or ``Denied`` (refusals are audited)."""
        try:
            identity = self.identity_of(request)
        except AuthError as err:
            if err.reason != AuthFailure.MISSING:  # a bad or expired token is worth a record; no token is not
                await self.record(None, "web.denied", f"batch/{batch_id[:128]}", Outcome.DENIED, reason=str(err))
            raise Denied(401, f"authentication failed: {err}") from None
        if not valid_batch_id(batch_id):
            raise Denied(404, "no such batch")
        if not self.permissions.allows(method, identity.roles):
            roles = ",".join(sorted(identity.roles)) or "none"
            reason = f"role(s) {roles} of {identity.subject} may not use {method}"
            await self.record(identity, "web.denied", f"batch/{batch_id}", Outcome.DENIED, reason=reason)
            raise Denied(403, reason)
        manifest = await self.io(self.jobs.get_manifest, batch_id)
        if manifest is None:
            raise Denied(404, f"no batch {batch_id!r}")
        identity = await self.io(self.with_live_assignment, identity, batch_id)
        try:
            check_batch_access(self.permissions, method, identity, batch_id, manifest.client)
        except AccessDenied as err:
            await self.record(identity, "web.denied", f"batch/{batch_id}", Outcome.DENIED, reason=str(err))
            raise Denied(403, str(err)) from None
        return identity, manifest

    def with_live_assignment(self, identity: Identity, batch_id: str) -> Identity:
        """A reviewer is assigned a batch by their token or by its live assignment record (``AssignReviewer``),
        as in the gateway's Review service, so a new assignment works without a new login."""
        if Role.REVIEWER not in identity.roles or batch_id in identity.batches:
            return identity
        if identity.subject.lower() in reviewers_of(self.jobs, batch_id).reviewers:
            return dataclasses.replace(identity, batches=identity.batches | {batch_id})
        return identity

    def may(self, identity: Identity, method: str, manifest: BatchManifest) -> bool:
        try:
            check_batch_access(self.permissions, method, identity, manifest.batch_id, manifest.client)
        except AccessDenied:
            return False
        return True

    # -- data -----------------------------------------------------------------------------------
    def load_report(self, batch_id: str, call_id: str) -> Report:
        return Report.model_validate_json(self.jobs.get_report(call_id, batch_id))

    def batch_rows(self, manifest: BatchManifest) -> list[dict[str, Any]]:
        statuses = self.jobs.statuses(manifest)

        def row(status: Any) -> dict[str, Any]:
            report = None
            if status.state == CallState.DONE:
                try:
                    report = self.load_report(manifest.batch_id, status.call_id)
                except ObjectNotFound:
                    report = None
            review = review_bridge.review_status(self.jobs, manifest.batch_id, status.call_id) if report else {}
            return views.batch_row(status.call_id, status.state.value, report, review)

        rows = list(self._fanout.map(row, statuses))
        return sorted(rows, key=views.batch_sort_key)

    def audio_bytes(self, manifest: BatchManifest, call_id: str) -> bytes:
        key = f"{manifest.batch_id}/{call_id}"
        data = self.audio_cache.get(key)
        if data is None:
            spec = next((c for c in manifest.calls if c.call_id == call_id), None)
            if spec is None:
                raise ObjectNotFound(call_id)
            data = read_maybe_plaintext(self.store, spec.audio_key)
            self.audio_cache.put(key, data)
        return data


# -- pages ----------------------------------------------------------------------------------------


def _page(title: str, body: str, scripts: tuple[str, ...] = ()) -> HTMLResponse:
    tags = "".join(f'<script src="/static/{s}" defer></script>' for s in scripts)
    return HTMLResponse(
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · callqc</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="stylesheet" href="/static/reviewer.css">{tags}</head><body>'
        '<nav><a href="/">callqc 质检复核 (review)</a>'
        '<form method="post" action="/logout"><button type="submit">退出 (log out)</button></form></nav>'
        f"{body}</body></html>"
    )


def _denied_page(err: Denied, request: Request) -> Response:
    if err.status == 401:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    title = {403: "无权访问 (forbidden)", 404: "未找到 (not found)"}.get(err.status, "错误 (error)")
    body = f'<main><h1>{title}</h1><p class="error">{html.escape(err.message)}</p></main>'
    return HTMLResponse(_page(title, body).body, status_code=err.status)


def _json_error(err: Denied) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status)


def _safe_next(value: str) -> str:
    """Only same-site paths after login (no open redirect)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def build_routes(web: ReviewerWeb) -> list[Route | Mount]:
    async def index(request: Request) -> Response:
        try:
            identity = web.identity_of(request)
        except AuthError:
            return RedirectResponse("/login", status_code=303)
        batches = set(identity.batches)
        if Role.REVIEWER in identity.roles:
            batches |= set(await web.io(assignments_of, web.jobs, identity.subject.lower()))
        links = "".join(f'<li><a href="/batches/{quote(b)}">{html.escape(b)}</a></li>' for b in sorted(batches))
        body = (
            f"<main><h1>你好 (hello), {html.escape(identity.subject)}</h1>"
            f"<p>角色 (roles): {html.escape(', '.join(sorted(identity.roles)))}</p>"
            f"<h2>分配给您的批次 (assigned batches)</h2><ul>{links or '<li>无 (none)</li>'}</ul>"
            '<form method="get" action="/go"><label>批次号 (batch id) <input name="batch" required '
            'pattern="[A-Za-z0-9._:\\-]{1,128}"></label> <button>打开 (open)</button></form></main>'
        )
        return _page("callqc", body)

    async def go(request: Request) -> Response:
        batch = request.query_params.get("batch", "")
        return RedirectResponse(f"/batches/{quote(batch, safe='')}", status_code=303)

    async def login_form(request: Request) -> Response:
        nxt = html.escape(_safe_next(request.query_params.get("next", "/")))
        error = request.query_params.get("error")
        msg = '<p class="error">用户名、密码或动态码错误 (invalid username, password or code)</p>' if error else ""
        body = (
            f'<main class="login"><h1>登录 (log in)</h1>{msg}<form method="post" action="/login">'
            f'<input type="hidden" name="next" value="{nxt}">'
            '<label>用户名 (username) <input name="username" autocomplete="username" required></label>'
            '<label>密码 (password) <input name="password" type="password" autocomplete="current-password" '
            "required></label>"
            '<label>动态码 (TOTP code) <input name="totp" inputmode="numeric" autocomplete="one-time-code" '
            'pattern="[0-9 ]{6,8}" required></label>'
            '<button type="submit">登录 (log in)</button></form></main>'
        )
        return _page("登录 (log in)", body)

    async def login(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > 4096:
            return Response("form too large", status_code=413)
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        username = form.get("username", "")[:64]
        nxt = _safe_next(form.get("next", "/"))
        try:
            result = await web.io(web.login_service.login, username, form.get("password", ""), form.get("totp", ""))
        except LoginFailed as err:
            await web.record(None, "auth.login", f"user/{username}", Outcome.FAILURE, actor=username,
                             reason=err.reason.value)  # fmt: skip
            return RedirectResponse(f"/login?error=1&next={quote(nxt)}", status_code=303)
        await web.record(result.identity, "auth.login", f"user/{result.identity.subject}")
        response = RedirectResponse(nxt, status_code=303)
        expires = result.identity.expires_at
        max_age = int(expires.timestamp() - time.time()) if expires else web.issuer.ttl
        response.set_cookie(
            web.web.cookie_name, result.token, max_age=max(1, max_age), httponly=True,
            secure=web.secure_cookie, samesite="strict", path="/",
        )  # fmt: skip
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(web.web.cookie_name, path="/", secure=web.secure_cookie, httponly=True,
                               samesite="strict")  # fmt: skip
        return response

    async def batch_page(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        try:
            await web.authorise(request, GET_BATCH, batch_id)
        except Denied as err:
            return _denied_page(err, request)
        body = (
            f'<main id="app" data-batch="{html.escape(batch_id)}"><h1>批次 (batch) {html.escape(batch_id)}</h1>'
            '<p id="status">加载中 (loading)…</p><table id="calls"><thead><tr>'
            "<th>通话 (call)</th><th>结论 (verdict)</th><th>最高级别 (top severity)</th>"
            "<th>发现 (findings)</th><th>评分 (score)</th><th>复核 (review)</th><th>状态 (state)</th>"
            "</tr></thead><tbody></tbody></table></main>"
        )
        return _page(f"batch {batch_id}", body, ("common.js", "batch.js"))

    async def call_page(request: Request) -> Response:
        batch_id, call_id = request.path_params["batch_id"], request.path_params["call_id"]
        try:
            await web.authorise(request, GET_REVIEW_ITEM, batch_id)
        except Denied as err:
            return _denied_page(err, request)
        body = (
            f'<main id="app" data-batch="{html.escape(batch_id)}" data-call="{html.escape(call_id)}">'
            f'<p><a href="/batches/{quote(batch_id)}">← 批次 (batch) {html.escape(batch_id)}</a></p>'
            f'<h1>通话 (call) {html.escape(call_id)}</h1><section id="header"></section>'
            '<section id="player-box"><audio id="player" controls preload="metadata"></audio>'
            '<p class="hint">点击发现可跳转到录音位置 (click a finding to play its span)</p></section>'
            '<div class="columns"><section id="transcript-box"><h2>转写 (transcript)</h2>'
            '<ol id="transcript"></ol></section><section id="findings-box"><h2>发现 (findings)</h2>'
            '<table id="findings"><thead><tr><th>时间 (time)</th><th>规则 (rule)</th><th>级别 (severity)</th>'
            "<th>机器 (machine)</th><th>人工 (human)</th><th></th></tr></thead><tbody></tbody></table>"
            '<section id="review-box"></section></section></div><p id="status"></p></main>'
        )
        return _page(f"call {call_id}", body, ("common.js", "call.js"))

    # -- JSON API ------------------------------------------------------------------------------
    async def api_batch(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        try:
            identity, manifest = await web.authorise(request, GET_BATCH, batch_id)
        except Denied as err:
            return _json_error(err)
        rows = await web.io(web.batch_rows, manifest)
        await web.record(identity, "batch.read", f"batch/{batch_id}")
        return JSONResponse({"batch_id": batch_id, "created_at": manifest.created_at, "calls": rows})

    async def _call_context(request: Request, method: str) -> tuple[Identity, BatchManifest, str]:
        batch_id, call_id = request.path_params["batch_id"], request.path_params["call_id"]
        identity, manifest = await web.authorise(request, method, batch_id)
        if not valid_call_id(call_id) or all(c.call_id != call_id for c in manifest.calls):
            raise Denied(404, f"call {call_id!r} is not in batch {batch_id}")
        return identity, manifest, call_id

    async def _audio_grant(identity: Identity, manifest: BatchManifest, call_id: str) -> dict[str, Any] | None:
        if not web.may(identity, GET_AUDIO, manifest):
            return None
        url, expires = web.signer.sign(manifest.batch_id, call_id, identity.subject)
        await web.record(identity, "audio.grant", f"audio/{manifest.batch_id}/{call_id}", expires=expires)
        return {"url": url, "expires": expires}

    def _actions(identity: Identity, manifest: BatchManifest) -> list[str]:
        """Review actions this person may take on this batch (the page shows only those buttons)."""
        roles = {r.value for r in identity.roles}
        return [
            kind.value
            for kind, method in review_bridge.ACTION_METHODS.items()
            if roles & ACTION_ROLES[kind] and web.may(identity, method, manifest)
        ]

    async def api_call(request: Request) -> Response:
        try:
            identity, manifest, call_id = await _call_context(request, GET_REVIEW_ITEM)
        except Denied as err:
            return _json_error(err)
        try:
            report = await web.io(web.load_report, manifest.batch_id, call_id)
        except ObjectNotFound:
            return _json_error(Denied(404, f"no report for call {call_id!r} yet"))
        payload = await web.io(review_bridge.call_payload, web.jobs, report)
        await web.record(identity, "report.read", f"report/{manifest.batch_id}/{call_id}")
        payload["header"] = views.header_of(report)
        payload["audio"] = await _audio_grant(identity, manifest, call_id)
        payload["actions"] = _actions(identity, manifest)
        payload["viewer"] = {"subject": identity.subject, "roles": sorted(identity.roles)}
        return JSONResponse(payload)

    async def api_audio_url(request: Request) -> Response:
        try:
            identity, manifest, call_id = await _call_context(request, GET_REVIEW_ITEM)
        except Denied as err:
            return _json_error(err)
        grant = await _audio_grant(identity, manifest, call_id)
        if grant is None:
            return _json_error(Denied(403, f"{identity.subject} may not listen to this call"))
        return JSONResponse(grant)

    async def api_review(request: Request) -> Response:
        if request.headers.get("x-requested-with") != "callqc":  # forces a CORS preflight cross-site: no CSRF
            return JSONResponse({"error": "missing X-Requested-With: callqc"}, status_code=400)
        raw = await request.body()
        if len(raw) > 16384:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            body = json.loads(raw or b"{}")
            kind = ActionKind(str(body.get("action", ""))) if isinstance(body, dict) else None
        except ValueError:
            kind = None
        if kind is None:
            return JSONResponse({"error": "want a JSON object with a valid 'action'"}, status_code=400)
        try:
            identity, manifest, call_id = await _call_context(request, review_bridge.ACTION_METHODS[kind])
            report = await web.io(web.load_report, manifest.batch_id, call_id)
        except Denied as err:
            return _json_error(err)
        except ObjectNotFound:
            return _json_error(Denied(404, f"no report for call {call_id!r} yet"))
        resource = f"review/{manifest.batch_id}/{call_id}"
        try:
            action, revision = review_bridge.parse_action(body, report)
        except (ValueError, TypeError, KeyError) as err:
            return JSONResponse({"error": f"invalid review action: {err}"}, status_code=400)
        audit = {"kind": kind.value, "finding_id": action.finding_id, "expected_revision": revision}
        try:
            payload = await web.io(
                functools.partial(
                    review_bridge.apply, web.jobs, report, action,
                    actor=identity.subject, roles=sorted(r.value for r in identity.roles), revision=revision,
                )
            )  # fmt: skip
        except ReviewError as err:
            denied = isinstance(err, ReviewForbidden)
            outcome = Outcome.DENIED if denied else Outcome.FAILURE
            await web.record(identity, f"review.{kind.value}", resource, outcome, **audit, error=str(err)[:300])
            status = 403 if denied else 409 if isinstance(err, ReviewConflict) else 422
            return JSONResponse({"error": str(err)}, status_code=status)
        await web.record(identity, f"review.{kind.value}", resource, **audit, revision=payload["review"]["revision"])
        payload["header"] = views.header_of(report)
        payload["actions"] = _actions(identity, manifest)
        return JSONResponse(payload)

    # -- audio -----------------------------------------------------------------------------------
    async def audio(request: Request) -> Response:
        batch_id, call_id = request.path_params["batch_id"], request.path_params["call_id"]
        q = request.query_params
        subject = q.get("sub", "")[:64]
        resource = f"audio/{batch_id[:128]}/{call_id[:128]}"
        try:
            grant = web.signer.verify(batch_id, call_id, subject, q.get("exp", ""), q.get("sig", ""))
        except SignatureInvalid as err:
            await web.record(None, "audio.read", resource, Outcome.DENIED, actor=subject or "anonymous",
                             reason=err.reason)  # fmt: skip
            return JSONResponse({"error": f"audio URL refused: {err.reason}"}, status_code=403)
        manifest = await web.io(web.jobs.get_manifest, batch_id)
        try:
            if manifest is None:
                raise ObjectNotFound(batch_id)
            data = await web.io(web.audio_bytes, manifest, call_id)
        except ObjectNotFound:
            return JSONResponse({"error": "no such audio"}, status_code=404)
        size = len(data)
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable:
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
        first, last = wanted if wanted is not None else (0, size - 1)
        await web.record(
            None, "audio.read", resource, actor=grant.subject, range=f"{first}-{last}", bytes=last - first + 1
        )
        headers = {
            "accept-ranges": "bytes",
            "content-type": audio_type(data[:16]),
            "cache-control": "private, no-store",
        }
        if wanted is None:
            return Response(data, status_code=200, headers=headers)
        headers["content-range"] = f"bytes {first}-{last}/{size}"
        return Response(data[first : last + 1], status_code=206, headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return [
        Route("/", index),
        Route("/go", go),
        Route("/healthz", healthz),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/batches/{batch_id}", batch_page),
        Route("/calls/{batch_id}/{call_id}", call_page),
        Route("/api/batches/{batch_id}", api_batch),
        Route("/api/calls/{batch_id}/{call_id}", api_call),
        Route("/api/calls/{batch_id}/{call_id}/audio-url", api_audio_url),
        Route("/api/calls/{batch_id}/{call_id}/review", api_review, methods=["POST"]),
        Route("/audio/{batch_id}/{call_id}", audio),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]


def create_app(settings: Settings, store: ObjectStore | None = None, **kwargs: Any) -> Starlette:
    """The reviewer web application on ``store`` (default: the encrypted bucket of ``settings``)."""
    web = ReviewerWeb(settings, store if store is not None else open_store(settings), **kwargs)
    app = Starlette(
        routes=build_routes(web),
        middleware=[Middleware(SecurityHeaders, hsts=settings.web.tls_mode == "tls")],
    )
    app.state.web = web
    return app
