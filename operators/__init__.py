"""Tooling for cluster operators (talks to Ray; the domain library never does)."""
