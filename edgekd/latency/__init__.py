"""Latency on a device profile's own runtime: sessions, runners and measurement."""

from edgekd.latency.measure import measure, speedup

__all__ = ["measure", "speedup"]
