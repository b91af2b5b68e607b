"""Password hashing, user directory, password + TOTP login and lockout."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyotp
import pytest

from callqc.security.envelope import EncryptedObjectStore, Keyring
from callqc.security.login import (
    GENERIC_LOGIN_ERROR,
    LoginFailed,
    LoginFailure,
    LoginService,
    NewUser,
    UserDirectory,
    UserExists,
    create_user,
)
from callqc.security.passwords import Passwords, WeakPasswordError, check_password_policy
from callqc.security.roles import Role
from callqc.security.settings import Argon2Settings, LoginSettings
from callqc.security.tokens import TokenIssuer, generate_signing_key

try:
    from test_security_helpers import FakeObjectStore
except ImportError:  # tests/unit imported as a package
    from tests.unit.test_security_helpers import FakeObjectStore

PASSWORD = "Correct-Horse-42"
CHEAP = Argon2Settings(time_cost=1, memory_cost_kib=64, parallelism=1)  # fast tests; production uses defaults


class CountingPasswords(Passwords):
    """Counts argon2 verifications, to check unknown users cost the same work."""

    verifications = 0

    def verify(self, stored_hash: str, password: str) -> bool:
        self.verifications += 1
        return super().verify(stored_hash, password)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Env:
    store: FakeObjectStore
    directory: UserDirectory
    pw: CountingPasswords
    clock: Clock
    service: LoginService
    totp: pyotp.TOTP
    new: NewUser


@pytest.fixture
def env() -> Env:
    store = FakeObjectStore()
    directory = UserDirectory(store)
    pw = CountingPasswords(CHEAP)
    clock = Clock()
    settings = LoginSettings(max_failures=3, lockout_minutes=10)
    issuer = TokenIssuer(generate_signing_key(), "callqc", 600)
    new = create_user(directory, pw, "Alice", PASSWORD, ["reviewer"], batches=["b1"], settings=settings)
    service = LoginService(directory, pw, issuer, settings, clock=clock)
    totp = pyotp.TOTP(new.totp_secret)
    return Env(store, directory, pw, clock, service, totp, new)


def code(totp: pyotp.TOTP, t: float, steps: int = 0) -> str:
    return totp.at(t, counter_offset=steps)


def fail(service: LoginService, user: str, pw: str, otp: str) -> LoginFailed:
    with pytest.raises(LoginFailed) as err:
        service.login(user, pw, otp)
    assert str(err.value) == GENERIC_LOGIN_ERROR
    return err.value


def test_password_hashing() -> None:
    pw = Passwords(CHEAP)
    h = pw.hash(PASSWORD)
    assert h.startswith("$argon2id$") and PASSWORD not in h
    assert pw.hash(PASSWORD) != h  # salted
    assert pw.verify(h, PASSWORD) and not pw.verify(h, PASSWORD + "x") and not pw.verify("garbage", PASSWORD)
    assert Passwords(Argon2Settings(time_cost=2, memory_cost_kib=128, parallelism=1)).needs_rehash(h)
    assert not pw.needs_rehash(h)


@pytest.mark.parametrize("bad", ["short-1A", "alllowercaseletters", "ALLUPPER12345678"])
def test_password_policy(bad: str) -> None:
    with pytest.raises(WeakPasswordError):
        check_password_policy(bad, 12)
    check_password_policy(PASSWORD, 12)


def test_create_user(env: Env) -> None:
    assert env.new.name == "alice"
    assert env.new.provisioning_uri.startswith("otpauth://totp/callqc:alice?secret=" + env.new.totp_secret)
    assert "issuer=callqc" in env.new.provisioning_uri
    stored = json.loads(env.store.get_bytes("auth/users/alice.json"))
    assert stored["roles"] == ["reviewer"] and stored["batches"] == ["b1"]
    assert PASSWORD not in json.dumps(stored)
    assert env.directory.names() == ["alice"]
    with pytest.raises(UserExists):
        create_user(env.directory, env.pw, "alice", PASSWORD, ["auditor"])
    with pytest.raises(WeakPasswordError):
        create_user(env.directory, env.pw, "bob", "weak", ["auditor"])
    for bad in ["../etc/passwd", "a/b", "", "x" * 65, "名字"]:
        with pytest.raises(ValueError):
            create_user(env.directory, env.pw, bad, PASSWORD, ["auditor"])
    with pytest.raises(ValueError):
        create_user(env.directory, env.pw, "carol", PASSWORD, [])


def test_login_success(env: Env) -> None:
    result = env.service.login("Alice", PASSWORD, code(env.totp, env.clock.t))
    assert result.identity.subject == "alice" and result.identity.roles == {Role.REVIEWER}
    assert result.identity.kind == "person" and result.identity.batches == {"b1"}
    assert result.token.count(".") == 2


def test_same_message_and_same_work_for_unknown_user_and_wrong_password(env: Env) -> None:
    before = env.pw.verifications
    unknown = fail(env.service, "mallory", PASSWORD, code(env.totp, env.clock.t))
    wrong = fail(env.service, "alice", "Wrong-Password-1", code(env.totp, env.clock.t))
    assert (unknown.reason, wrong.reason) == (LoginFailure.UNKNOWN_USER, LoginFailure.BAD_PASSWORD)
    assert env.pw.verifications - before == 2  # one argon2 run each
    assert fail(env.service, "../../etc", PASSWORD, "123456").reason == LoginFailure.UNKNOWN_USER


def test_totp_window(env: Env) -> None:
    assert fail(env.service, "alice", PASSWORD, code(env.totp, env.clock.t, -2)).reason == LoginFailure.BAD_TOTP
    assert fail(env.service, "alice", PASSWORD, "12345a").reason == LoginFailure.BAD_TOTP
    env.service.login("alice", PASSWORD, code(env.totp, env.clock.t, -1))  # previous step accepted (and resets counter)
    env.clock.t += 90
    env.service.login("alice", PASSWORD, code(env.totp, env.clock.t, +1))  # next step accepted
    env.clock.t += 300
    assert fail(env.service, "alice", PASSWORD, code(env.totp, env.clock.t, +2)).reason == LoginFailure.BAD_TOTP


def test_totp_code_cannot_be_replayed(env: Env) -> None:
    otp = code(env.totp, env.clock.t)
    env.service.login("alice", PASSWORD, otp)
    assert fail(env.service, "alice", PASSWORD, otp).reason == LoginFailure.TOTP_REPLAY
    # an older (but in-window) code is a replay too
    assert fail(env.service, "alice", PASSWORD, code(env.totp, env.clock.t, -1)).reason == LoginFailure.TOTP_REPLAY
    env.clock.t += 30
    env.service.login("alice", PASSWORD, code(env.totp, env.clock.t))


def test_lockout_and_expiry(env: Env) -> None:
    for _ in range(3):
        fail(env.service, "alice", "Wrong-Password-1", code(env.totp, env.clock.t))
    rec = env.directory.get("alice")
    assert rec is not None and rec.locked_until == env.clock.t + 600
    # locked: even the right credentials fail, with the same message
    assert fail(env.service, "alice", PASSWORD, code(env.totp, env.clock.t)).reason == LoginFailure.LOCKED
    env.clock.t += 599
    assert fail(env.service, "alice", PASSWORD, code(env.totp, env.clock.t)).reason == LoginFailure.LOCKED
    env.clock.t += 2
    assert env.service.login("alice", PASSWORD, code(env.totp, env.clock.t)).identity.subject == "alice"
    rec = env.directory.get("alice")
    assert rec is not None and rec.failed_attempts == 0 and rec.locked_until is None


def test_wrong_totp_counts_toward_lockout_and_success_resets(env: Env) -> None:
    window = {code(env.totp, env.clock.t, k) for k in (-1, 0, 1)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in window)
    assert fail(env.service, "alice", PASSWORD, wrong).reason == LoginFailure.BAD_TOTP
    fail(env.service, "alice", "Wrong-Password-1", code(env.totp, env.clock.t))
    env.service.login("alice", PASSWORD, code(env.totp, env.clock.t))
    fail(env.service, "alice", "Wrong-Password-1", code(env.totp, env.clock.t))
    fail(env.service, "alice", "Wrong-Password-1", code(env.totp, env.clock.t))
    rec = env.directory.get("alice")
    assert rec is not None and rec.locked_until is None and rec.failed_attempts == 2
    env.service.unlock("alice")
    assert env.directory.get("alice").failed_attempts == 0  # type: ignore[union-attr]


def test_disabled_user(env: Env) -> None:
    rec = env.directory.get("alice")
    assert rec is not None
    rec.disabled = True
    env.directory.save(rec)
    assert fail(env.service, "alice", PASSWORD, code(env.totp, env.clock.t)).reason == LoginFailure.DISABLED


def test_user_directory_through_encrypted_store() -> None:
    inner = FakeObjectStore()
    directory = UserDirectory(EncryptedObjectStore(inner, Keyring.generate()))
    pw = Passwords(CHEAP)
    new = create_user(directory, pw, "bob", PASSWORD, [Role.QC_MANAGER])
    raw = inner.get_bytes("auth/users/bob.json")
    assert new.totp_secret.encode() not in raw and b"argon2" not in raw
    service = LoginService(directory, pw, TokenIssuer(generate_signing_key(), "callqc", 60))
    assert service.login("bob", PASSWORD, pyotp.TOTP(new.totp_secret).now()).identity.roles == {Role.QC_MANAGER}
