"""Security configuration: one pydantic model, nested into the application's settings.

Secrets are never values here, only *where* to find them (a file path or an environment
variable name); keys are generated at deploy time and never live in the repository.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from callqc.security.roles import Role


class TokenSettings(BaseModel):
    """Bearer tokens (Ed25519-signed JWT)."""

    issuer: str = "callqc"
    audience: str = "callqc-api"
    ttl_seconds: int = Field(900, ge=10, description="lifetime of a person's token")
    max_ttl_seconds: int = Field(3600, ge=10, description="no token is issued for longer")
    leeway_seconds: int = Field(30, ge=0, le=300, description="clock skew tolerated on exp/nbf/iat")
    signing_key_file: Path | None = Field(None, description="PEM (PKCS#8) Ed25519 private key")
    signing_key_env: str = Field("CALLQC_TOKEN_SIGNING_KEY", description="env var holding the PEM")
    require_private_key_mode_0600: bool = Field(
        True, description="refuse key files readable by group/others (set Secret defaultMode 0400)"
    )


class Argon2Settings(BaseModel):
    """argon2id cost (defaults: RFC 9106 'second recommended' profile, 64 MiB)."""

    time_cost: int = Field(3, ge=1)
    memory_cost_kib: int = Field(65536, ge=8)
    parallelism: int = Field(4, ge=1)


class LoginSettings(BaseModel):
    """Password + TOTP login of people."""

    max_failures: int = Field(5, ge=1, description="consecutive failures before lockout")
    lockout_minutes: float = Field(15, gt=0)
    totp_valid_window: int = Field(1, ge=0, le=2, description="accepted TOTP steps either side of now")
    totp_issuer: str = "callqc"
    min_password_length: int = Field(12, ge=8)
    users_prefix: str = "auth/users/"


class ServiceCert(BaseModel):
    """A client certificate identity (SAN or CN value) mapped to a service identity."""

    match: str = Field(description="exact SAN (DNS/URI/IP) or CN value of the client certificate")
    subject: str
    roles: list[Role] = Field(default_factory=lambda: [Role.CALL_SYSTEM])


class TlsSettings(BaseModel):
    """Server TLS material (PEM files)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    require_client_auth: bool = False


class EnvelopeSettings(BaseModel):
    """Client-side encryption master keys (a JSON keyring, see ``envelope.Keyring``)."""

    keyring_file: Path | None = None
    keyring_env: str = "CALLQC_MASTER_KEYRING"


class AuditSettings(BaseModel):
    """Audit trail location and optional HMAC key for the hash chain."""

    prefix: str = "audit/"
    hmac_key_file: Path | None = Field(None, description="32+ random bytes; makes the chain unforgeable")

    @field_validator("prefix")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"


class SecuritySettings(BaseModel):
    """Everything the security modules need; nest as ``settings.security`` in the app settings."""

    tokens: TokenSettings = Field(default_factory=TokenSettings)
    argon2: Argon2Settings = Field(default_factory=Argon2Settings)
    login: LoginSettings = Field(default_factory=LoginSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    envelope: EnvelopeSettings = Field(default_factory=EnvelopeSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    permissions_file: Path | None = Field(None, description="override the packaged permissions.yaml")
    require_encryption_at_rest: bool = Field(
        True, description="refuse to start a component that would store plaintext (no master keyring)"
    )
    service_certs: list[ServiceCert] = Field(default_factory=list)
    ray_tls: bool = Field(
        True, description="the local stack runs Ray's internal gRPC over mutual TLS (RAY_USE_TLS) with its own PKI"
    )
