"""callqc — the domain library of the collection-call QC inspector (no Ray imports here)."""

__version__ = "0.1.0"
