"""The reviewer page end to end: real S3 server, encrypted audio and report, HTTPS, Debian Chromium.

A sample call (samples/calls/zh_violation.wav) is written through the encrypted store with a report whose
findings sit at the ground-truth turn times of samples/batch.yaml; the web app serves it over TLS with a
test PKI; Chromium (driven by playwright, never a downloaded browser) opens the call page as an assigned
reviewer, clicks the second finding and the player must land inside that finding's span.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import requests
import uvicorn
import yaml

from callqc.jobs import BatchManifest, CallStatus, JobStore
from callqc.models import CallSpec, CallState, Finding, Role, Segment, Severity
from callqc.report import Versions, build_report, report_json
from callqc.review import Decision, assign_reviewer, load_review
from callqc.security.audit import AuditLog, Outcome
from callqc.security.login import UserDirectory, create_user
from callqc.security.passwords import Passwords
from callqc.security.settings import TlsSettings
from callqc.security.tls import generate_test_pki
from callqc.security.tokens import TokenIssuer, generate_signing_key
from callqc.settings import Settings
from callqc.storage import ObjectStore
from callqc.web.app import create_app
from callqc.web.server import bind, uvicorn_config
from callqc.web.signing import AudioSigner

from ..conftest import SAMPLES, issue_token

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GUARD_SECONDS = 30  # start-up / wait guards so a bug cannot hang the suite; never asserted on
CALL_ID = "zh_violation"
PASS_CALL = "zh_compliant"
BATCH_ID = "bweb0000000000000000000001"
PHONE = "13812345678"  # PII put into one customer turn: the page must show it masked
SIGNING_KEY = b"k" * 32  # the test's audio URL key, so it can forge an expired-but-valid URL


@dataclass
class Seeded:
    wav: bytes
    findings: list[Finding]


def _turns(call_id: str) -> list[dict]:
    batch = yaml.safe_load((SAMPLES / "batch.yaml").read_text("utf-8"))
    return next(c for c in batch["calls"] if c["call_id"] == call_id)["expected"]["turns"]


def _segments(call_id: str) -> list[Segment]:
    segments = []
    for i, turn in enumerate(_turns(call_id)):
        role = Role(turn["speaker"])
        text = turn["text"]
        if call_id == CALL_ID and i == 1:
            text += f"我手机号{PHONE}。"
        segments.append(
            Segment(id=f"s{i}", role=role, channel=0 if role == Role.AGENT else 1, start=turn["start"],
                    end=turn["end"], text=text)
        )  # fmt: skip
    return segments


def _findings(segments: list[Segment]) -> list[Finding]:
    """One finding per ground-truth violating turn, at the turn's time span."""
    severity = {"F01": Severity.S0, "F03": Severity.S1, "F12": Severity.S0}
    out = []
    for seg, turn in zip(segments, _turns(CALL_ID), strict=True):
        for rule in turn["rules"]:
            out.append(
                Finding(rule_id=rule, name=f"rule {rule}", severity=severity[rule], category="agent",
                        segment_ids=[seg.id], start=seg.start, end=seg.end, evidence=seg.text, confidence=0.95)
            )  # fmt: skip
    return out


def _seed(store: ObjectStore, settings: Settings) -> Seeded:
    """Audio (encrypted) + manifest + two reports: a failing call with findings, a passing one without."""
    jobs = JobStore(store, settings.s3, io_threads=2)
    versions = Versions(pipeline="test", asr_model="ground-truth", rule_pack="test", speakers="channel")
    specs, wavs, out = [], {}, None
    for call_id in (CALL_ID, PASS_CALL):
        wav = (SAMPLES / "calls" / f"{call_id}.wav").read_bytes()
        key = f"{settings.s3.audio_prefix}web/{call_id}.wav"
        store.put_bytes(key, wav, content_type="audio/wav")
        specs.append(CallSpec(call_id=call_id, audio_key=key))
        wavs[call_id] = wav
    jobs.create_batch(
        BatchManifest(batch_id=BATCH_ID, request_id="r1", client="system-a", request_digest="d", calls=specs)
    )
    for spec in specs:
        segments = _segments(spec.call_id)
        findings = _findings(segments) if spec.call_id == CALL_ID else []
        report = build_report(
            spec, BATCH_ID, audio_sha256=hashlib.sha256(wavs[spec.call_id]).hexdigest(), duration=segments[-1].end,
            transcript=segments, findings=findings, versions=versions, stage_seconds={},
        )  # fmt: skip
        key = jobs.put_report(BATCH_ID, spec.call_id, report_json(report))
        jobs.set_status(BATCH_ID, CallStatus(call_id=spec.call_id, state=CallState.DONE, report_key=key))
        if spec.call_id == CALL_ID:
            out = Seeded(wavs[CALL_ID], report.findings)
    assert out is not None
    return out


class WebServer:
    """The web app under uvicorn (TLS) on a loopback socket, in a daemon thread."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.app = create_app(settings, store, signer=AudioSigner(SIGNING_KEY, settings.web.audio_url_ttl_seconds))
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        config = uvicorn_config(settings, self.app, port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + GUARD_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("web server did not start")
            time.sleep(0.02)
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(GUARD_SECONDS)
        self.sock.close()


@dataclass
class Site:
    base: str
    ca: Path
    settings: Settings
    seeded: Seeded
    store: ObjectStore

    def get(self, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(self.base + path, headers=headers, verify=str(self.ca), timeout=GUARD_SECONDS, **kw)

    def post(self, path: str, token: str | None, body: dict, csrf: bool = True) -> requests.Response:
        headers = {"X-Requested-With": "callqc"} if csrf else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(self.base + path, json=body, headers=headers, verify=str(self.ca), timeout=GUARD_SECONDS)

    def audit(self) -> AuditLog:
        return AuditLog.from_settings(self.store, self.settings.security.audit)


@pytest.fixture()
def site(settings: Settings, store: ObjectStore, tmp_path: Path) -> Iterator[Site]:
    pki = generate_test_pki(tmp_path / "pki")
    security = settings.security.model_copy(
        update={"tls": TlsSettings(cert_file=pki.server.cert, key_file=pki.server.key)}
    )
    web = settings.web.model_copy(update={"tls_mode": "tls", "port": 0, "audio_url_ttl_seconds": 60})
    settings = settings.model_copy(update={"security": security, "web": web})
    seeded = _seed(store, settings)
    server = WebServer(settings, store)
    base = server.start()
    try:
        yield Site(base, pki.ca.cert, settings, seeded, store)
    finally:
        server.stop()


def _reviewer(site: Site, subject: str = "rev-1", batches: tuple[str, ...] = (BATCH_ID,)) -> str:
    return issue_token(site.settings, subject, "reviewer", batches=batches)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) is not installed")
def test_click_on_finding_moves_the_player_into_its_span(site: Site, tmp_path: Path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    token = _reviewer(site)
    second = site.seeded.findings[1]
    assert second.start > site.seeded.findings[0].end  # the player really has to move
    audio_statuses: list[int] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chrome-profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            ignore_https_errors=True,  # the test CA is not in Chromium's store; requests below verify it
        )
        try:
            context.add_cookies(
                [{"name": "callqc_session", "value": token, "url": site.base, "httpOnly": True, "secure": True}]
            )
            page = context.new_page()
            page.set_default_timeout(GUARD_SECONDS * 1000)
            page.on("response", lambda r: audio_statuses.append(r.status) if "/audio/" in r.url else None)
            # the batch page lists calls by verdict, then severity; open the failing call from it
            page.goto(f"{site.base}/batches/{BATCH_ID}")
            page.wait_for_selector("#calls tbody tr >> nth=1")
            listed = page.locator("#calls tbody tr")
            assert [listed.nth(i).get_attribute("data-call") for i in range(2)] == [CALL_ID, PASS_CALL]
            assert "verdict-fail" in listed.nth(0).get_attribute("class")
            listed.nth(0).locator("a").click()
            page.wait_for_selector("#app[data-ready='1']")
            assert page.url == f"{site.base}/calls/{BATCH_ID}/{CALL_ID}"

            # header, transcript by role, findings highlighted, PII masked
            assert "不合格" in page.inner_text("#verdict")
            assert page.locator(".seg.role-agent").count() == 5
            assert page.locator(".seg.role-customer").count() == 4
            assert page.locator(".seg.hit").count() == len(site.seeded.findings)
            assert page.locator(".seg.hit-S1").count() == 1
            content = page.content()
            assert PHONE not in content and "138****5678" in content

            rows = page.locator("#findings tbody tr.finding")
            assert rows.count() == len(site.seeded.findings)
            page.wait_for_function("document.getElementById('player').readyState >= 1")
            rows.nth(1).click()
            page.wait_for_function(
                "([s]) => { const a = document.getElementById('player');"
                " return a.readyState >= 2 && !a.seeking && a.currentTime >= s; }",
                arg=[second.start],
            )
            page.wait_for_timeout(300)
            now = page.evaluate("document.getElementById('player').currentTime")
            assert second.start <= now <= second.end, (now, second)
            assert rows.nth(1).get_attribute("class").split().count("active") == 1

            # a review button: confirm the first finding; the human column shows it, the store has it
            rows.nth(0).locator("button.confirm").click()
            page.wait_for_selector("#findings tbody tr.finding >> nth=0 >> .human-confirmed")
            assert "rev 1" in page.inner_text("#review-state")
            page.screenshot(path=str(tmp_path / "call-page.png"), full_page=True)  # kept with the test's tmp dir
        finally:
            context.close()
    record = load_review(JobStore(site.store, site.settings.s3), BATCH_ID, CALL_ID)
    assert record.decisions == {"m0": Decision.CONFIRMED} and record.reviewers == ["rev-1"]
    assert 206 in audio_statuses, audio_statuses  # Chromium seeks with Range requests


def test_permissions_signed_audio_range_and_audit(site: Site) -> None:
    path_page, path_api = f"/calls/{BATCH_ID}/{CALL_ID}", f"/api/calls/{BATCH_ID}/{CALL_ID}"
    # refused: no credentials, operator, auditor, call system, a reviewer of another batch
    assert site.get(path_api).status_code == 401
    forged = TokenIssuer(generate_signing_key(), "callqc").issue("rev-1", ["reviewer"], batches=[BATCH_ID])
    assert site.get(path_api, forged).status_code == 401
    page = site.get(path_page, allow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    for token in (
        issue_token(site.settings, "ops-1", "operator"),
        issue_token(site.settings, "aud-1", "auditor"),
        issue_token(site.settings, "system-a", "call_system"),  # owns the batch, but is no reviewer
        _reviewer(site, "rev-2", batches=("bsomeotherbatch",)),
    ):
        assert site.get(path_api, token).status_code == 403
        assert site.get(path_page, token).status_code == 403
        assert site.get(f"/api/calls/{BATCH_ID}/{CALL_ID}/audio-url", token).status_code == 403
    assert site.get(f"/batches/{BATCH_ID}", issue_token(site.settings, "ops-1", "operator")).status_code == 403

    # the assigned reviewer: batch list sorted by verdict, call view redacted, a signed audio URL
    token = _reviewer(site)
    batch = site.get(f"/api/batches/{BATCH_ID}", token)
    assert batch.status_code == 200
    assert [(c["call_id"], c["verdict"], c["top_severity"]) for c in batch.json()["calls"]] == [
        (CALL_ID, "fail", "S0"),
        (PASS_CALL, "pass", ""),
    ]
    view = site.get(path_api, token)
    assert view.status_code == 200
    assert "content-security-policy" in view.headers and view.headers["cache-control"] == "no-store"
    data = view.json()
    assert PHONE not in view.text and "138****5678" in data["transcript"][1]["text"]
    assert [f["rule_id"] for f in data["findings"]] == [f.rule_id for f in site.seeded.findings]
    url = data["audio"]["url"]
    assert 0 < data["audio"]["expires"] - time.time() <= 60

    wav = site.seeded.wav
    whole = site.get(url)
    assert whole.status_code == 200 and whole.content == wav and whole.headers["content-type"] == "audio/wav"
    part = site.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.content == wav[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(wav)}"
    assert part.headers["accept-ranges"] == "bytes"
    tail = site.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == wav[-100:]
    assert site.get(url, headers={"Range": f"bytes={len(wav)}-"}).status_code == 416

    # expired (validly signed an hour ago), tampered, or for another call: refused
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    old = AudioSigner(SIGNING_KEY, 60, clock=lambda: time.time() - 3600)
    expired, _ = old.sign(BATCH_ID, CALL_ID, "rev-1")
    refused = site.get(expired, headers={"Range": "bytes=0-99"})
    assert refused.status_code == 403 and "expired" in refused.json()["error"]
    assert site.get(url.replace(q["sig"], "0" * 64)).status_code == 403
    assert site.get(url.replace(f"/{CALL_ID}?", f"/{PASS_CALL}?")).status_code == 403
    assert site.get(url.replace("sub=rev-1", "sub=rev-2")).status_code == 403

    # every audio access is in the audit trail, and the chain verifies
    log = site.audit()
    records = list(log.records())
    reads = [r for r in records if r.action == "audio.read" and r.outcome == Outcome.SUCCESS]
    assert {r.details.get("range") for r in reads} >= {
        f"0-{len(wav) - 1}",
        "1000-1999",
        f"{len(wav) - 100}-{len(wav) - 1}",
    }
    assert all(r.actor == "rev-1" and r.resource == f"audio/{BATCH_ID}/{CALL_ID}" for r in reads)
    denied = [r for r in records if r.action == "audio.read" and r.outcome == Outcome.DENIED]
    assert {r.details["reason"] for r in denied} == {"expired", "bad_signature"}
    assert any(r.action == "audio.grant" and r.actor == "rev-1" for r in records)
    assert any(r.action == "report.read" and r.actor == "rev-1" for r in records)
    assert {r.actor for r in records if r.action == "web.denied"} >= {"ops-1", "aud-1", "system-a", "rev-2"}
    assert any(r.action == "web.denied" and "bad_signature" in r.details["reason"] for r in records)  # forged
    assert log.verify().ok


def test_login_form_sets_an_httponly_session_cookie(site: Site) -> None:
    directory = UserDirectory(site.store, site.settings.security.login.users_prefix)
    user = create_user(
        directory, Passwords(site.settings.security.argon2), "li.reviewer", "Correct horse 42",
        ["reviewer"], [BATCH_ID], site.settings.security.login,
    )  # fmt: skip
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE would override the test CA
    session.verify = str(site.ca)
    form = {"username": "li.reviewer", "password": "Correct horse 42", "next": f"/batches/{BATCH_ID}"}
    bad = session.post(site.base + "/login", data={**form, "totp": "000000"}, allow_redirects=False)
    assert bad.status_code == 303 and "error=1" in bad.headers["location"] and not session.cookies
    ok = session.post(
        site.base + "/login", data={**form, "totp": pyotp.TOTP(user.totp_secret).now()}, allow_redirects=False
    )
    assert ok.status_code == 303 and ok.headers["location"] == f"/batches/{BATCH_ID}"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    page = session.get(site.base + f"/batches/{BATCH_ID}")
    assert page.status_code == 200 and 'data-batch="' in page.text
    assert session.get(site.base + f"/api/batches/{BATCH_ID}").json()["calls"][0]["call_id"] == CALL_ID
    logins = [r for r in site.audit().records() if r.action == "auth.login"]
    assert [r.outcome for r in logins][:2] == [Outcome.FAILURE, Outcome.SUCCESS]


def test_review_actions_and_live_assignment(site: Site) -> None:
    api = f"/api/calls/{BATCH_ID}/{CALL_ID}"
    review = api + "/review"
    jobs = JobStore(site.store, site.settings.s3)
    # assigned after login (AssignReviewer): the live assignment record counts, as in the gateway
    late = _reviewer(site, "rev-3", batches=())
    assert site.get(api, late).status_code == 403
    assign_reviewer(jobs, BATCH_ID, "rev-3", by="mgr-1")
    view = site.get(api, late).json()
    assert view["actions"] == ["confirm", "reject", "add", "complete"]
    assert view["review"]["state"] == "draft" and view["review"]["revision"] == 0

    assert site.post(review, late, {"action": "confirm", "finding": "m0"}, csrf=False).status_code == 400
    assert site.post(review, issue_token(site.settings, "ops-1", "operator"), {"action": "confirm"}).status_code == 403
    assert site.post(review, late, {"action": "reject", "finding": "m1", "revision": 0}).status_code == 422  # no reason
    rejected = site.post(
        review, late, {"action": "reject", "finding": "m1", "reason": "误报 (false alarm)", "revision": 0}
    )
    assert rejected.status_code == 200, rejected.text
    data = rejected.json()
    assert data["findings"][1]["human"] == {"decision": "rejected", "reason": "误报 (false alarm)"}
    assert data["review"]["revision"] == 1 and data["review"]["human_edited"]
    stale = site.post(review, late, {"action": "confirm", "finding": "m0", "revision": 0})
    assert stale.status_code == 409  # someone changed it since revision 0: re-read

    added = site.post(
        review, late,
        {"action": "add", "rule_id": "F05", "name": "施压 (pressure)", "severity": "S1", "start": 6.9, "end": 10.4,
         "reason": f"客户号码{PHONE}被念出", "revision": 1},
    )  # fmt: skip
    assert added.status_code == 200, added.text
    new = added.json()["findings"][-1]
    assert new["key"] == "h1" and new["origin"] == "human" and new["segment_ids"] == ["s2"]
    assert PHONE not in added.text  # reasons are shown redacted too
    done = site.post(review, late, {"action": "complete", "revision": 2}).json()
    assert done["review"]["state"] == "reviewed" and done["review"]["verdict"] in ("fail", "needs_review", "pass")
    assert site.post(review, late, {"action": "appeal", "reason": "x", "revision": 3}).status_code == 403
    manager = issue_token(site.settings, "mgr-1", "qc_manager")
    assert site.get(api, manager).json()["actions"] == ["confirm", "reject", "add", "complete", "appeal", "finalize"]
    final = site.post(review, manager, {"action": "finalize", "reason": "定稿", "revision": 3})
    assert final.status_code == 200 and final.json()["review"]["state"] == "final"
    batch = site.get(f"/api/batches/{BATCH_ID}", late).json()["calls"]
    assert batch[0]["review"] == {"state": "final", "revision": 4, "reviewers": ["rev-3", "mgr-1"]}

    records = [r for r in site.audit().records() if r.action.startswith("review.")]
    assert [(r.action, r.outcome) for r in records] == [
        ("review.reject", Outcome.FAILURE),
        ("review.reject", Outcome.SUCCESS),
        ("review.confirm", Outcome.FAILURE),
        ("review.add", Outcome.SUCCESS),
        ("review.complete", Outcome.SUCCESS),
        ("review.finalize", Outcome.SUCCESS),
    ]
    assert all(PHONE not in str(r.details) and "误报" not in str(r.details) for r in records)
