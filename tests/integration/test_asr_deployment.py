"""The ASR stage as the pipeline calls it: PCM keys in S3 → ChannelTranscriber → Transcribed, and the Serve
deployment class gathering concurrent channel requests into batches (its class run directly, no Ray cluster).
"""

from __future__ import annotations

import asyncio
import types
import wave
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from callqc.asr import Transcriber, resolve_model_dir
from callqc.audio import to_pcm16
from callqc.errors import CallErrorCode, CallProcessingError
from callqc.pipeline import ChannelTranscriber, Transcribed
from callqc.settings import AsrSettings, Settings
from callqc.storage import ObjectNotFound, ObjectStore

from ..conftest import SAMPLES

pytestmark = pytest.mark.integration


def _put_channels(store: ObjectStore, call: str) -> list[str]:
    with wave.open(str(SAMPLES / "calls" / f"{call}.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    keys = []
    for index in (0, 1):
        key = f"work/{call}/16000/ch{index}.s16le"
        store.put_bytes(key, to_pcm16(pcm[:, index].astype(np.float32) / 32768.0))
        keys.append(key)
    return keys


@pytest.fixture(scope="module")
def model() -> Iterator[Transcriber]:
    settings = AsrSettings()
    yield Transcriber(settings, resolve_model_dir(settings))


def test_channel_requests_of_several_calls_in_one_batch(store: ObjectStore, model: Transcriber) -> None:
    en, zh = _put_channels(store, "en_violation"), _put_channels(store, "zh_violation")
    requests = [
        (en[0], "en"),
        (zh[0], "zh"),
        ("work/missing/ch0.s16le", "en"),
        (en[1], "xx-not-a-language"),
        (zh[1], "zh"),
    ]
    results = ChannelTranscriber(store, model).transcribe_many(requests)
    assert isinstance(results[0], Transcribed) and "break your legs" in " ".join(s.text for s in results[0].segments)
    assert isinstance(results[1], Transcribed) and "老赖" in "".join(s.text for s in results[1].segments)
    assert isinstance(results[2], ObjectNotFound)  # left to the dispatcher's retry
    assert isinstance(results[3], CallProcessingError) and results[3].code == CallErrorCode.INVALID_CALL
    assert isinstance(results[4], Transcribed) and results[4].segments
    assert {r.model_version for r in results if isinstance(r, Transcribed)} == {model.version}
    with pytest.raises(ObjectNotFound):
        ChannelTranscriber(store, model).transcribe("work/missing/ch1.s16le", "en")


@pytest.fixture(autouse=True)
def _fresh_batch_queue() -> Iterator[None]:
    """Running the class in this process creates @serve.batch's queue on the class-level function; drop it
    afterwards so the class can still be pickled by Serve in later tests (replicas create their own)."""
    yield
    from deployments.asr import ASR

    ASR.func_or_class._batched.set_max_batch_size.__self__._queue = None


@pytest.fixture()
def deployment_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Serve replica would see: callqc settings from the environment, a replica context."""
    import ray.serve.batching as batching

    monkeypatch.setenv("CALLQC_S3__ENDPOINT", settings.s3.endpoint)
    monkeypatch.setenv("CALLQC_S3__ACCESS_KEY", settings.s3.access_key)
    monkeypatch.setenv("CALLQC_S3__SECRET_KEY", settings.s3.secret_key.get_secret_value())
    monkeypatch.setenv("CALLQC_S3__BUCKET", settings.s3.bucket)
    monkeypatch.setenv("CALLQC_SECURITY__ENVELOPE__KEYRING_FILE", str(settings.security.envelope.keyring_file))
    context = types.SimpleNamespace(_deployment_config=types.SimpleNamespace(max_ongoing_requests=8))
    monkeypatch.setattr(batching.serve, "get_replica_context", lambda: context)


@pytest.mark.timeout(600)
def test_the_deployment_batches_concurrent_channel_requests(deployment_env: None, store: ObjectStore) -> None:
    from deployments.asr import ASR

    keys = _put_channels(store, "en_compliant") + _put_channels(store, "zh_compliant")
    replica = ASR.func_or_class()
    replica.reconfigure({"batch_max_requests": 4, "batch_wait_seconds": 0.5})
    sizes: list[int] = []
    inner = replica.transcriber.transcribe_many

    def spy(requests: list[tuple[str, str]]) -> list[Any]:
        sizes.append(len(requests))
        return inner(requests)

    replica.transcriber.transcribe_many = spy

    async def scenario() -> tuple[list[Transcribed], BaseException | None]:
        # one event loop for the replica's whole life, as in Serve (the batch queue belongs to it)
        languages = ["en", "en", "zh", "zh"]
        results = await asyncio.gather(*(replica.transcribe(k, lang) for k, lang in zip(keys, languages, strict=True)))
        try:
            await replica.transcribe("work/none/ch0.s16le", "en")
        except ObjectNotFound as err:
            return results, err
        return results, None

    results, missing = asyncio.run(scenario())
    assert sizes == [4, 1]  # two calls, both channels, one batch; then the lone request
    assert "pay in our official app" in " ".join(s.text for s in results[0].segments).lower()
    assert "friday" in " ".join(s.text for s in results[1].segments).lower()
    assert results[2].segments and results[3].segments
    assert isinstance(missing, ObjectNotFound)
    before = replica.transcriber.transcriber
    replica.reconfigure({"batch_size": 2})  # decoding knob: no reload
    assert replica.transcriber.transcriber is before and before.decoder.settings.batch_size == 2
    with pytest.raises(ValueError):
        replica.reconfigure({"batch_size": 0})
