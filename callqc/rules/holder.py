"""Hot reload: keep the running engine until a new pack has validated *and* compiled."""

from __future__ import annotations

import threading
from pathlib import Path

from callqc.models import CallMetadata, Finding, Transcript
from callqc.rules.engine import RuleEngine
from callqc.rules.pack import RulePack, default_pack_path, load_rule_pack

PackSource = Path | str | bytes | RulePack


def _load(source: PackSource) -> RulePack:
    return source if isinstance(source, RulePack) else load_rule_pack(source)


class EngineHolder:
    """Holds the current ``RuleEngine``; storage-agnostic (callers fetch the pack bytes themselves)."""

    def __init__(self, source: PackSource | None = None, backend: str = "auto") -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._engine = RuleEngine(_load(source if source is not None else default_pack_path()), backend)

    @property
    def engine(self) -> RuleEngine:
        return self._engine

    @property
    def version(self) -> str:
        return self._engine.version

    def reload(self, source: PackSource) -> RulePack:
        """Swap in a new pack; on ``RulePackError`` the running engine stays in force."""
        pack = _load(source)
        engine = RuleEngine(pack, self._backend)  # compile outside the lock: evaluation never waits
        with self._lock:
            self._engine = engine
        return pack

    def reload_if_changed(self, source: PackSource) -> bool:
        """Reload only when the pack's bytes differ from the running one (cheap to poll)."""
        pack = _load(source)
        if pack.sha256 and pack.sha256 == self._engine.pack.sha256:
            return False
        self.reload(pack)
        return True

    def evaluate(self, transcript: Transcript, metadata: CallMetadata | None = None) -> list[Finding]:
        return self._engine.evaluate(transcript, metadata)
