"""Roles and the deny-by-default RPC permission table.

The table is data (``permissions.yaml`` beside this module) so an auditor can read what
each role may call. ``PermissionTable.allows`` answers the interceptor's question (may any
of these roles call this method?); ``check_batch_access`` answers the servicer's follow-up
(may this identity see *this* batch?), which needs the batch's owner and so cannot be
decided from the method name alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from callqc.security.identity import Identity


class Role(StrEnum):
    """Who a caller is, for authorisation."""

    CALL_SYSTEM = "call_system"
    REVIEWER = "reviewer"
    QC_MANAGER = "qc_manager"
    OPERATOR = "operator"
    AUDITOR = "auditor"


class Scope(StrEnum):
    """How far a role's grant on a method reaches."""

    ANY = "any"  # no per-batch restriction
    OWN = "own"  # batches the identity submitted
    ASSIGNED = "assigned"  # batches assigned to the identity


class AccessDenied(Exception):
    """An authenticated identity may not do this (maps to gRPC PERMISSION_DENIED)."""


class PermissionTableError(ValueError):
    """The permission table file is invalid."""


@dataclass(frozen=True)
class MethodRule:
    """One RPC's grants: public, or role -> scope."""

    public: bool = False
    grants: Mapping[Role, Scope] = field(default_factory=dict)


@dataclass(frozen=True)
class PermissionTable:
    """RPC full method name -> rule. Anything not listed is denied."""

    methods: Mapping[str, MethodRule]

    @classmethod
    def load(cls, path: Path | None = None) -> PermissionTable:
        """Load ``path``, or the packaged ``permissions.yaml`` when None."""
        if path is None:
            text = resources.files(__package__).joinpath("permissions.yaml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls.from_mapping(yaml.safe_load(text))

    @classmethod
    def from_mapping(cls, data: object) -> PermissionTable:
        """Validate a parsed table (strictly: unknown roles, scopes or keys are errors)."""
        if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
            raise PermissionTableError("permission table needs a 'methods' mapping")
        if extra := set(data) - {"roles", "methods"}:
            raise PermissionTableError(f"unknown top-level keys {sorted(extra)}")
        for role in data.get("roles", []):
            if role not in Role.__members__.values():
                raise PermissionTableError(f"unknown role {role!r} in 'roles'")
        methods: dict[str, MethodRule] = {}
        for name, spec in data["methods"].items():
            if not isinstance(name, str) or not name.startswith("/") or name.count("/") != 2:
                raise PermissionTableError(f"bad method name {name!r}: want '/package.Service/Method'")
            if not isinstance(spec, dict) or not spec:
                raise PermissionTableError(f"{name}: want a non-empty mapping")
            if "public" in spec:
                if spec != {"public": True}:
                    raise PermissionTableError(f"{name}: 'public: true' stands alone")
                methods[name] = MethodRule(public=True)
                continue
            grants: dict[Role, Scope] = {}
            for role, scope in spec.items():
                try:
                    grants[Role(role)] = Scope(scope)
                except ValueError as exc:
                    raise PermissionTableError(f"{name}: {exc}") from None
            methods[name] = MethodRule(grants=grants)
        return cls(methods=methods)

    def is_known(self, method: str) -> bool:
        return method in self.methods

    def is_public(self, method: str) -> bool:
        rule = self.methods.get(method)
        return rule is not None and rule.public

    def allowed_roles(self, method: str) -> frozenset[Role]:
        """Roles that may call ``method`` (empty for unknown or public methods)."""
        rule = self.methods.get(method)
        return frozenset(rule.grants) if rule else frozenset()

    def allows(self, method: str, roles: Iterable[Role]) -> bool:
        """True when the method is public or any of ``roles`` is granted it."""
        rule = self.methods.get(method)
        if rule is None:
            return False
        return rule.public or any(r in rule.grants for r in roles)

    def scopes(self, method: str, roles: Iterable[Role]) -> set[Scope]:
        """Scopes the given roles hold on ``method``."""
        rule = self.methods.get(method)
        if rule is None:
            return set()
        return {rule.grants[r] for r in roles if r in rule.grants}


def check_batch_access(
    table: PermissionTable, method: str, identity: Identity, batch_id: str, batch_owner: str
) -> None:
    """Raise ``AccessDenied`` unless ``identity`` may use ``method`` on this batch.

    ``batch_owner`` is the subject that submitted the batch (recorded in its manifest).
    """
    scopes = table.scopes(method, identity.roles)
    if Scope.ANY in scopes:
        return
    if Scope.OWN in scopes and batch_owner == identity.subject:
        return
    if Scope.ASSIGNED in scopes and batch_id in identity.batches:
        return
    raise AccessDenied(f"{identity.subject} may not access batch {batch_id} via {method}")
