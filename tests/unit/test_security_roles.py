"""Permission table: deny by default, strict loading, per-batch scopes."""

from __future__ import annotations

from pathlib import Path

import pytest

from callqc.security.identity import Identity
from callqc.security.roles import (
    AccessDenied,
    PermissionTable,
    PermissionTableError,
    Role,
    Scope,
    check_batch_access,
)

GET_BATCH = "/callqc.v1.CallQC/GetBatch"


@pytest.fixture(scope="module")
def table() -> PermissionTable:
    return PermissionTable.load()


def test_packaged_table_deny_by_default(table: PermissionTable) -> None:
    assert table.is_public("/callqc.v1.CallQC/Login")
    assert not table.is_known("/callqc.v1.CallQC/Nope")
    assert not table.allows("/callqc.v1.CallQC/Nope", list(Role))
    assert not table.allows("/callqc.v1.CallQC/SubmitBatch", [])
    assert table.allows("/callqc.v1.CallQC/SubmitBatch", [Role.CALL_SYSTEM])
    assert not table.allows("/callqc.v1.CallQC/SubmitBatch", [Role.QC_MANAGER, Role.OPERATOR])
    assert table.allowed_roles("/callqc.v1.CallQC/Login") == frozenset()


def test_every_role_is_granted_something(table: PermissionTable) -> None:
    granted = {r for m in table.methods for r in table.allowed_roles(m)}
    assert granted == set(Role)


def test_scopes(table: PermissionTable) -> None:
    assert table.scopes(GET_BATCH, [Role.CALL_SYSTEM]) == {Scope.OWN}
    assert table.scopes(GET_BATCH, [Role.REVIEWER]) == {Scope.ASSIGNED}
    assert table.scopes(GET_BATCH, [Role.QC_MANAGER, Role.REVIEWER]) == {Scope.ANY, Scope.ASSIGNED}
    assert table.scopes(GET_BATCH, [Role.OPERATOR]) == set()


@pytest.mark.parametrize(
    ("identity", "owner", "batch", "ok"),
    [
        (Identity.build("cs-a", ["call_system"], "service"), "cs-a", "b1", True),
        (Identity.build("cs-a", ["call_system"], "service"), "cs-b", "b1", False),
        (Identity.build("rev", ["reviewer"], batches=["b1"]), "cs-a", "b1", True),
        (Identity.build("rev", ["reviewer"], batches=["b1"]), "cs-a", "b2", False),
        (Identity.build("rev", ["reviewer"]), "rev", "b2", False),  # reviewers have no 'own' scope
        (Identity.build("mgr", ["qc_manager"]), "cs-a", "b9", True),
        (Identity.build("ops", ["operator"]), "cs-a", "b1", False),
        (Identity.build("aud", ["auditor"]), "cs-a", "b1", False),
    ],
)
def test_check_batch_access(table: PermissionTable, identity: Identity, owner: str, batch: str, ok: bool) -> None:
    for method in (GET_BATCH, "/callqc.v1.CallQC/GetReport", "/callqc.v1.CallQC/WatchBatch"):
        if ok:
            check_batch_access(table, method, identity, batch, owner)
        else:
            with pytest.raises(AccessDenied):
                check_batch_access(table, method, identity, batch, owner)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({}, "methods"),
        ({"methods": {"/a.B/C": {"root": "any"}}}, "root"),
        ({"methods": {"/a.B/C": {"reviewer": "everything"}}}, "everything"),
        ({"methods": {"a.B/C": {"reviewer": "any"}}}, "bad method"),
        ({"methods": {"/a.B/C": {"public": True, "reviewer": "any"}}}, "alone"),
        ({"methods": {"/a.B/C": {}}}, "non-empty"),
        ({"methods": {}, "extra": 1}, "top-level"),
        ({"methods": {}, "roles": ["superuser"]}, "superuser"),
    ],
)
def test_table_loading_is_strict(data: object, match: str) -> None:
    with pytest.raises(PermissionTableError, match=match):
        PermissionTable.from_mapping(data)


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "perm.yaml"
    path.write_text("methods:\n  /x.Y/Z: {auditor: any}\n")
    table = PermissionTable.load(path)
    assert table.allows("/x.Y/Z", [Role.AUDITOR]) and not table.allows(GET_BATCH, list(Role))


REVIEW = "/callqc.v1.Review/"


@pytest.mark.parametrize(
    ("method", "allowed"),
    [
        ("ListAssignments", {Role.REVIEWER, Role.QC_MANAGER}),
        ("AssignReviewer", {Role.QC_MANAGER}),
        ("GetReviewItem", {Role.REVIEWER, Role.QC_MANAGER}),
        ("SubmitReview", {Role.REVIEWER, Role.QC_MANAGER}),
        ("AppealReview", {Role.QC_MANAGER}),
        ("FinalizeReview", {Role.QC_MANAGER}),
        ("GetRawTranscript", {Role.QC_MANAGER}),
        ("ExportFindings", {Role.QC_MANAGER}),
        ("GetCoverage", {Role.QC_MANAGER, Role.OPERATOR}),
    ],
)
def test_review_service_grants(table: PermissionTable, method: str, allowed: set[Role]) -> None:
    assert table.allowed_roles(REVIEW + method) == allowed


def test_review_scopes_and_every_review_rpc_is_listed(table: PermissionTable) -> None:
    from callqc.v1 import review_pb2

    assert table.scopes(REVIEW + "GetReviewItem", [Role.REVIEWER]) == {Scope.ASSIGNED}
    assert table.scopes(REVIEW + "SubmitReview", [Role.REVIEWER]) == {Scope.ASSIGNED}
    methods = review_pb2.DESCRIPTOR.services_by_name["Review"].methods
    assert all(table.is_known(REVIEW + m.name) for m in methods)
    assert not table.is_known("/callqc.v1.Admin/ExportReports")  # the placeholder is gone
