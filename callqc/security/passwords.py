"""argon2id password hashing (argon2-cffi), with a timing-equaliser for unknown users."""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from callqc.security.settings import Argon2Settings


class WeakPasswordError(ValueError):
    """The password does not meet the policy."""


class Passwords:
    """Hash and verify passwords; argon2 compares digests in constant time."""

    def __init__(self, settings: Argon2Settings | None = None) -> None:
        s = settings or Argon2Settings()
        self._hasher = argon2.PasswordHasher(
            time_cost=s.time_cost,
            memory_cost=s.memory_cost_kib,
            parallelism=s.parallelism,
            type=argon2.Type.ID,
        )
        # Verified against when the user does not exist, so both paths cost one argon2 run.
        self._dummy_hash = self._hasher.hash("callqc-dummy-password-for-timing")

    def hash(self, password: str) -> str:
        """An encoded argon2id hash (salt and parameters included)."""
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """True when ``password`` matches; False on mismatch or an unreadable hash."""
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> None:
        """Spend the same time as a real verification (for unknown or locked users)."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with weaker parameters than configured now."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True


def check_password_policy(password: str, min_length: int = 12) -> None:
    """Raise ``WeakPasswordError`` for passwords that are too short or single-class."""
    if len(password) < min_length:
        raise WeakPasswordError(f"password must be at least {min_length} characters")
    classes = sum(
        [
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ]
    )
    if classes < 3:
        raise WeakPasswordError("password needs three of: lower case, upper case, digits, symbols")
