"""One settings object for every entry point (CLI, gateway, Serve deployments).

Sources, strongest first: environment variables (``CALLQC_`` prefix, ``__`` between levels,
e.g. ``CALLQC_S3__ENDPOINT``), the YAML file named by ``CALLQC_CONFIG``, then the defaults below.
Secrets (S3 keys) come from the environment or the local stack's state file, never from the repo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from callqc.diarization.base import DiarizationSettings
from callqc.judge import JudgeSettings
from callqc.security.settings import SecuritySettings
from callqc.web.settings import WebSettings


class S3Settings(BaseModel):
    """Where objects live. Any S3 API server: rclone (local default) or MinIO (production)."""

    endpoint: str = "127.0.0.1:9900"
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")
    secure: bool = False
    ca_file: str = ""  # CA bundle that signed the S3 server's certificate (when secure)
    region: str = "us-east-1"
    bucket: str = "callqc"
    audio_prefix: str = "audio/"
    jobs_prefix: str = "jobs/"
    reports_prefix: str = "reports/"
    models_prefix: str = "models/"


class GatewaySettings(BaseModel):
    """The client-facing gRPC server."""

    # tls: server certificate (security.tls.*), client certificates optional but verified when sent;
    # mtls: client certificate required; local: loopback-only gRPC local credentials, no encryption
    # (tests / development on one machine only — never in production).
    tls_mode: Literal["tls", "mtls", "local"] = "tls"
    host: str = "127.0.0.1"
    port: int = 50051
    max_calls_per_batch: int = Field(default=5000, ge=1)
    max_message_bytes: int = 4 * 1024 * 1024
    upload_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    upload_spool_bytes: int = 8 * 1024 * 1024  # uploads larger than this spill to a temp file
    watch_poll_seconds: float = 0.5
    io_threads: int = 8
    # Backpressure: refuse new batches (RESOURCE_EXHAUSTED, clients back off) while more than this many
    # accepted calls are unfinished; 0 = no limit. Size it to what the cluster clears within the SLA.
    max_backlog_calls: int = Field(default=0, ge=0)
    # Check at intake that every audio key exists (one S3 HEAD per call: early AUDIO_NOT_FOUND in the
    # SubmitBatch reply). Off: the same error is recorded by AudioPrep moments later; intake is ~4x faster.
    check_audio_on_submit: bool = True
    # Content-addressed uploads (audio/uploads/<sha256>) never change: the gateway remembers the sizes it
    # stored or checked, so a batch referencing them costs no HEAD. 0 entries = always ask S3.
    known_audio_entries: int = Field(default=200_000, ge=0)
    known_audio_ttl_seconds: float = Field(default=900.0, gt=0)
    backlog_refresh_seconds: float = 5.0


class AudioSettings(BaseModel):
    """Caps applied before any decoding, and the limits of the isolated decoder process."""

    max_bytes: int = 512 * 1024 * 1024
    max_duration_seconds: float = 4 * 3600
    sample_rate: int = 16000
    max_channels: int = Field(default=8, ge=1)  # more → AUDIO_TOO_MANY_CHANNELS (before any decoding)
    accept_damaged: bool = False  # True: decode what a truncated / partly corrupt file holds instead of failing
    decode_cpu_seconds: int = Field(default=300, ge=1)  # RLIMIT_CPU of the decoder process
    decode_memory_bytes: int = Field(default=1024 * 1024 * 1024, ge=64 * 1024 * 1024)  # its RLIMIT_AS
    decode_timeout_seconds: float = Field(default=900.0, gt=0)  # wall-clock guard; the process is killed


class AsrSettings(BaseModel):
    """faster-whisper. ``model_dir`` empty = whisper base assembled from the offline packages."""

    model_dir: str = ""
    model_cache: Path = Path("~/.cache/callqc/models").expanduser()  # where bundled models are assembled
    model_name: str = "whisper-base"
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 1  # threads per batch (CPU)
    num_workers: int = 2  # batches decoded at once in one replica (each batch spans calls and channels)
    beam_size: int = 1
    vad_filter: bool = True
    word_timestamps: bool = True
    initial_prompt_zh: str = "以下是普通话的句子。"
    temperatures: list[float] = [0.0, 0.6]  # one fallback only: each fallback re-decodes the window
    compression_ratio_threshold: float = 2.4  # above: repetition loop → re-decode, then drop
    log_prob_threshold: float = -1.0  # below: low confidence → re-decode, then drop
    no_speech_threshold: float = 0.6
    batch_size: int = Field(default=8, ge=1)  # speech windows per encoder/decoder call (across calls and channels)
    batch_max_requests: int = Field(default=8, ge=1)  # channel requests the Serve replica gathers into one batch
    batch_wait_seconds: float = Field(default=0.05, ge=0)  # how long it waits for more requests
    trim_windows: bool = True  # encode each speech window at its own length (CPU); False: whisper's 30 s
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 160
    vad_speech_pad_ms: int = 150
    verify_model: bool = True  # check model files against their sha256 manifest when loading


class DispatcherSettings(BaseModel):
    """How the dispatcher pulls stored work into the pipeline."""

    max_in_flight: int = Field(default=2, ge=1)
    poll_seconds: float = 1.0
    max_attempts: int = Field(default=3, ge=1)


class RulesSettings(BaseModel):
    pack_path: str = ""  # empty = the pack shipped in rulepacks/default.yaml
    pack_key: str = ""  # S3 key of the pack in force; when set, the Rules replicas poll it and hot-reload
    reload_seconds: float = 30.0


class TelemetrySettings(BaseModel):
    """Traces and metrics."""

    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str = ""  # empty: OTEL_EXPORTER_OTLP_ENDPOINT or the exporter's default
    gateway_metrics_port: int = 0  # >0: Prometheus metrics of the gateway on this port
    dispatcher_metrics_port: int = 0  # >0: Prometheus metrics of the dispatcher (pipeline) on this port
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 inside a pod


class Settings(BaseSettings):
    """All of callqc's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CALLQC_", env_nested_delimiter="__", extra="ignore", nested_model_default_partial_update=True
    )

    home: Path = Path("~/.callqc").expanduser()
    s3: S3Settings = S3Settings()
    gateway: GatewaySettings = GatewaySettings()
    audio: AudioSettings = AudioSettings()
    asr: AsrSettings = AsrSettings()
    dispatcher: DispatcherSettings = DispatcherSettings()
    rules: RulesSettings = RulesSettings()
    security: SecuritySettings = SecuritySettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    diarization: DiarizationSettings = Field(default_factory=DiarizationSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = os.environ.get("CALLQC_CONFIG")
        if config_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=Path(config_path)))
        return tuple(sources)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment / CALLQC_CONFIG, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
