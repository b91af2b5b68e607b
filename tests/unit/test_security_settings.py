"""SecuritySettings defaults/validation, and the package's import hygiene (no Ray, lazy gRPC)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from callqc.security.roles import Role
from callqc.security.settings import SecuritySettings, ServiceCert


def test_defaults_are_conservative() -> None:
    s = SecuritySettings()
    assert s.tokens.ttl_seconds <= 900 and s.tokens.leeway_seconds <= 60
    assert s.tokens.signing_key_file is None  # keys come from deployment, never defaults
    assert s.argon2.memory_cost_kib >= 65536
    assert s.login.max_failures == 5 and s.login.totp_valid_window == 1
    assert s.audit.prefix == "audit/"


def test_nested_parsing_and_validation() -> None:
    s = SecuritySettings.model_validate(
        {
            "login": {"max_failures": 3, "lockout_minutes": 30},
            "audit": {"prefix": "audit/gw-0"},
            "service_certs": [{"match": "callsys-a.bank.internal", "subject": "callsys-a"}],
        }
    )
    assert s.login.max_failures == 3 and s.audit.prefix == "audit/gw-0/"
    assert s.service_certs == [ServiceCert(match="callsys-a.bank.internal", subject="callsys-a")]
    assert s.service_certs[0].roles == [Role.CALL_SYSTEM]
    with pytest.raises(ValidationError):
        SecuritySettings.model_validate({"service_certs": [{"match": "x", "subject": "y", "roles": ["root"]}]})
    with pytest.raises(ValidationError):
        SecuritySettings.model_validate({"login": {"totp_valid_window": 5}})
    with pytest.raises(ValidationError):
        SecuritySettings.model_validate({"tokens": {"ttl_seconds": 0}})


def test_no_ray_and_no_eager_heavy_imports() -> None:
    code = (
        "import sys\n"
        "import callqc.security.envelope, callqc.security.audit\n"
        "assert 'grpc' not in sys.modules and 'argon2' not in sys.modules, 'envelope/audit pulled grpc/argon2'\n"
        "import callqc.security.interceptor, callqc.security.login, callqc.security.tls\n"
        "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules), 'ray imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
