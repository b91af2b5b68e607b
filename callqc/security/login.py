"""People log in with password + TOTP and get a short-lived token.

Users live as JSON in the object store (``auth/users/{name}.json``); wrap the store in
``envelope.EncryptedObjectStore`` in production, since a record holds the TOTP secret.
The service is synchronous (argon2 is CPU work, the store is sync); call it from asyncio
through ``asyncio.to_thread``.

Every failure raises ``LoginFailed`` whose message is the same for unknown user, wrong
password, wrong or replayed code, locked and disabled accounts; the precise ``reason`` is
for the audit trail only. Lockout: ``max_failures`` consecutive failures lock the account
for ``lockout_minutes``. Counters are read-modify-write in the store: exact within one
process, best effort across gateway replicas.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import pyotp
from pydantic import BaseModel, Field
from pyotp.exceptions import OTPVerificationError

from callqc.security.identity import Identity
from callqc.security.passwords import Passwords, check_password_policy
from callqc.security.roles import Role
from callqc.security.settings import LoginSettings
from callqc.security.store import ObjectStoreLike, get_or_none
from callqc.security.tokens import TokenIssuer

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
GENERIC_LOGIN_ERROR = "invalid username, password or one-time code"


class LoginFailure(StrEnum):
    UNKNOWN_USER = "unknown_user"
    BAD_PASSWORD = "bad_password"
    BAD_TOTP = "bad_totp"
    TOTP_REPLAY = "totp_replay"
    LOCKED = "locked"
    DISABLED = "disabled"


class LoginFailed(Exception):
    """Login refused. ``str()`` is the same generic text for every reason."""

    def __init__(self, reason: LoginFailure, username: str) -> None:
        super().__init__(GENERIC_LOGIN_ERROR)
        self.reason = reason
        self.username = username


class UserExists(Exception):
    """A user with that name already exists."""


class UserRecord(BaseModel):
    """One person's credentials and lockout state, as stored."""

    name: str
    password_hash: str
    totp_secret: str
    roles: list[Role]
    batches: list[str] = Field(default_factory=list)
    disabled: bool = False
    failed_attempts: int = 0
    locked_until: float | None = None
    last_totp_step: int | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class NewUser:
    """What ``create_user`` hands back: show the URI once (QR code), then forget it."""

    name: str
    provisioning_uri: str
    totp_secret: str


@dataclass(frozen=True)
class LoginResult:
    token: str
    identity: Identity


def validate_username(name: str) -> str:
    """Lower-case ``name`` and check it is safe as an object-key segment."""
    norm = name.strip().lower()
    if not _NAME_RE.fullmatch(norm):
        raise ValueError("username must be 1-64 of a-z 0-9 . _ - and start with a letter or digit")
    return norm


class UserDirectory:
    """User records as JSON objects under ``prefix`` in the object store."""

    def __init__(self, store: ObjectStoreLike, prefix: str = "auth/users/") -> None:
        self._store = store
        self._prefix = prefix if prefix.endswith("/") else prefix + "/"

    def _key(self, name: str) -> str:
        return f"{self._prefix}{validate_username(name)}.json"

    def get(self, name: str) -> UserRecord | None:
        try:
            key = self._key(name)
        except ValueError:
            return None
        raw = get_or_none(self._store, key)
        return None if raw is None else UserRecord.model_validate_json(raw)

    def create(self, record: UserRecord) -> bool:
        """Store a new record; False if the name is taken."""
        return self._store.put_if_absent(self._key(record.name), record.model_dump_json().encode())

    def save(self, record: UserRecord) -> None:
        self._store.put_bytes(
            self._key(record.name), record.model_dump_json().encode(), content_type="application/json"
        )

    def names(self) -> list[str]:
        n = len(self._prefix)
        return [k[n:-5] for k in self._store.list_keys(self._prefix) if k.endswith(".json")]


def create_user(
    directory: UserDirectory,
    passwords: Passwords,
    name: str,
    password: str,
    roles: Iterable[Role | str],
    batches: Iterable[str] = (),
    settings: LoginSettings | None = None,
) -> NewUser:
    """Create a user with a fresh TOTP secret; returns the provisioning URI for the authenticator app."""
    s = settings or LoginSettings()
    name = validate_username(name)
    check_password_policy(password, s.min_password_length)
    role_list = [Role(r) for r in roles]
    if not role_list:
        raise ValueError("a user needs at least one role")
    secret = pyotp.random_base32(32)
    record = UserRecord(
        name=name,
        password_hash=passwords.hash(password),
        totp_secret=secret,
        roles=role_list,
        batches=sorted(set(batches)),
    )
    if not directory.create(record):
        raise UserExists(name)
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=s.totp_issuer)
    return NewUser(name=name, provisioning_uri=uri, totp_secret=secret)


class LoginService:
    """Password + TOTP -> token, with lockout and TOTP replay protection."""

    _STRIPES = 64

    def __init__(
        self,
        directory: UserDirectory,
        passwords: Passwords,
        issuer: TokenIssuer,
        settings: LoginSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = directory
        self._pw = passwords
        self._issuer = issuer
        self._s = settings or LoginSettings()
        self._clock = clock
        self._locks = [threading.Lock() for _ in range(self._STRIPES)]

    def login(self, username: str, password: str, totp_code: str) -> LoginResult:
        """Check credentials and issue a token, or raise ``LoginFailed``."""
        name = username.strip().lower()
        with self._locks[zlib.crc32(name.encode()) % self._STRIPES]:
            return self._login_locked(name, password, totp_code)

    def _login_locked(self, name: str, password: str, totp_code: str) -> LoginResult:
        now = self._clock()
        rec = self._dir.get(name)
        if rec is None:
            self._pw.verify_dummy(password)
            raise LoginFailed(LoginFailure.UNKNOWN_USER, name)
        if rec.disabled:
            self._pw.verify_dummy(password)
            raise LoginFailed(LoginFailure.DISABLED, name)
        if rec.locked_until is not None and now < rec.locked_until:
            self._pw.verify_dummy(password)
            raise LoginFailed(LoginFailure.LOCKED, name)

        password_ok = self._pw.verify(rec.password_hash, password)
        step = self._match_totp(rec.totp_secret, totp_code, now)
        reason: LoginFailure | None = None
        if not password_ok:
            reason = LoginFailure.BAD_PASSWORD
        elif step is None:
            reason = LoginFailure.BAD_TOTP
        elif rec.last_totp_step is not None and step <= rec.last_totp_step:
            reason = LoginFailure.TOTP_REPLAY
        if reason is not None:
            rec.failed_attempts += 1
            rec.locked_until = None
            if rec.failed_attempts >= self._s.max_failures:
                rec.locked_until = now + self._s.lockout_minutes * 60
                rec.failed_attempts = 0
            self._dir.save(rec)
            raise LoginFailed(reason, name)

        rec.failed_attempts = 0
        rec.locked_until = None
        rec.last_totp_step = step
        if self._pw.needs_rehash(rec.password_hash):
            rec.password_hash = self._pw.hash(password)
        self._dir.save(rec)
        token = self._issuer.issue(rec.name, rec.roles, kind="person", batches=rec.batches)
        return LoginResult(token=token, identity=self._issuer.verify(token))

    def unlock(self, username: str) -> None:
        """Clear a lockout (an administrator action; audit it)."""
        rec = self._dir.get(username)
        if rec is None:
            raise KeyError(username)
        rec.failed_attempts = 0
        rec.locked_until = None
        self._dir.save(rec)

    def _match_totp(self, secret: str, code: str, now: float) -> int | None:
        """The matching time step within +-window (pyotp compares in constant time); else None."""
        code = code.replace(" ", "")
        totp = pyotp.TOTP(secret)
        if len(code) != totp.digits or not code.isascii() or not code.isdigit():
            return None
        try:
            return totp.verify_and_get_timecode(code, for_time=now, valid_window=self._s.totp_valid_window)
        except OTPVerificationError:
            return None
