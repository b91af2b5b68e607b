"""callqc.redaction: ID numbers (checksum), mobiles, bank cards (Luhn), e-mail; spoken digits; no false positives."""

from __future__ import annotations

import pytest

from callqc.models import CallSpec, Finding, Role, RoleAssignment, Segment, Severity, Word
from callqc.redaction import (
    PiiKind,
    find_pii,
    id_checksum_ok,
    luhn_ok,
    redact_report,
    redact_segments,
    redact_text,
)
from callqc.report import Versions, build_report

VALID_ID = "11010519491231002X"
VALID_ID_DIGIT = "440524198001010013"
CARD = "6222021234567890128"  # passes Luhn
MOBILE = "13812345678"


def test_id_checksum() -> None:
    assert id_checksum_ok(VALID_ID) and id_checksum_ok(VALID_ID.lower()) and id_checksum_ok(VALID_ID_DIGIT)
    assert not id_checksum_ok("110105194912310021")  # wrong check digit
    assert not id_checksum_ok("110105194913310028")  # month 13
    assert not id_checksum_ok("91010519491231002X")  # region 9
    assert not id_checksum_ok("1101051949123100")


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok(CARD)
    assert not luhn_ok("4111111111111112") and not luhn_ok("") and not luhn_ok("41a1")


@pytest.mark.parametrize(
    ("text", "kind", "masked"),
    [
        (f"身份证号{VALID_ID}。", PiiKind.ID_NUMBER, "身份证号**************002X。"),
        (f"身份证号{VALID_ID_DIGIT}", PiiKind.ID_NUMBER, "身份证号**************0013"),
        ("身份证一一零一零五一九四九一二三一零零二叉", PiiKind.ID_NUMBER, "身份证**************零零二叉"),
        (f"手机{MOBILE}", PiiKind.MOBILE, "手机138****5678"),
        ("手机 138 1234 5678 打这个", PiiKind.MOBILE, "手机 138 **** 5678 打这个"),
        ("+86 138-1234-5678", PiiKind.MOBILE, "+86 138-****-5678"),
        ("号码是幺三八一二三四五六七八", PiiKind.MOBILE, "号码是幺三八****五六七八"),
        ("一三八，一二三四，五六七八", PiiKind.MOBILE, "一三八，****，五六七八"),
        ("１３８１２３４５６７８", PiiKind.MOBILE, "１３８****５６７８"),
        ("卡号6222 0212 3456 7890 128", PiiKind.BANK_CARD, "卡号**** **** **** ***0 128"),
        ("卡号4111111111111111", PiiKind.BANK_CARD, "卡号************1111"),
        ("邮箱zhang.san@qq.com谢谢", PiiKind.EMAIL, "邮箱z********@qq.com谢谢"),
        ("邮箱zhangsan艾特163点com", PiiKind.EMAIL, "邮箱z*******艾特163点com"),
    ],
)
def test_found_and_masked(text: str, kind: PiiKind, masked: str) -> None:
    assert [m.kind for m in find_pii(text)] == [kind]
    out = redact_text(text)
    assert out == masked and len(out) == len(text)


@pytest.mark.parametrize(
    "text",
    [
        "您欠款35000元，逾期45天",
        "本金三万五千元，利息一千二百",
        "2026年11月20日前还款",
        "还款日 2026-11-20，金额 35,000.00 元",
        "截至20261120共计1234567元",
        "身份证号110105194912310021",  # bad check digit
        "卡号4111111111111112",  # fails Luhn
        "手机12812345678",  # not a mobile prefix
        "合同编号 HT2026112012345678",
        "客服电话 95588",
        "look at this.thing",
        "一二三四五六七八九",
        "1,234,567,890,123,456",  # thousands grouping is never a card
    ],
)
def test_no_false_positives(text: str) -> None:
    assert find_pii(text) == [] and redact_text(text) == text


def test_names_optional() -> None:
    assert redact_text("张三丰先生您好") == "张三丰先生您好"
    assert redact_text("张三丰先生您好", names=["张三丰"]) == "张**先生您好"


def test_number_spoken_across_words_is_masked_in_words_and_text() -> None:
    words = [Word(text=t, start=i, end=i + 1) for i, t in enumerate(["号码", "138", "1234", "5678", "对"])]
    seg = Segment(id="s1", role=Role.CUSTOMER, start=0, end=5, text="号码 138 1234 5678 对", words=words)
    (out,) = redact_segments([seg])
    assert out.text == "号码 138 **** 5678 对"
    assert [w.text for w in out.words] == ["号码", "138", "****", "5678", "对"]
    assert seg.words[2].text == "1234"  # the input is not changed


def test_redact_report_masks_transcript_findings_and_cues() -> None:
    report = build_report(
        CallSpec(call_id="c1", audio_key="audio/x"),
        "b1",
        audio_sha256="ab" * 32,
        duration=3.0,
        transcript=[Segment(id="s1", role=Role.AGENT, start=0, end=3, text=f"请核对身份证{VALID_ID}")],
        findings=[
            Finding(
                rule_id="R02",
                name="身份核实",
                severity=Severity.S0,
                evidence=f"身份证{VALID_ID}",
                rationale=f"坐席念出了 {MOBILE}",
            )
        ],
        versions=Versions(pipeline="p", asr_model="m", rule_pack="r", speakers="s"),
        stage_seconds={},
        roles=RoleAssignment(method="cues", cues=[f"spk0 said {MOBILE}"]),
    )
    red = redact_report(report)
    dumped = red.model_dump_json()
    assert VALID_ID not in dumped and MOBILE not in dumped
    assert red.transcript[0].text.endswith("002X") and red.findings[0].rationale.endswith("138****5678")
    assert VALID_ID in report.transcript[0].text  # the original is untouched
