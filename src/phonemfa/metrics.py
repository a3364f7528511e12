"""Prometheus metrics of one service (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_started = Counter(
            "phonemfa_calls_started", "Verification calls placed", ["tenant", "mode"], registry=r
        )
        self.calls_finished = Counter(
            "phonemfa_calls_finished", "Calls ended, by outcome", ["tenant", "outcome"], registry=r
        )
        self.calls_refused = Counter(
            "phonemfa_calls_refused",
            "Calls refused before dialling, by reason",
            ["reason"],
            registry=r,
        )
        self.calls_in_progress = Gauge(
            "phonemfa_calls_in_progress", "Calls placed and not yet ended", registry=r
        )
        self.calls_waiting = Gauge(
            "phonemfa_calls_waiting_for_line",
            "Calls queued because trunk.max_calls are in progress",
            registry=r,
        )
        self.call_duration = Histogram(
            "phonemfa_call_duration_seconds",
            "From request to outcome",
            buckets=(1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 300),
            registry=r,
        )
        self.ari_connected = Gauge(
            "phonemfa_ari_connected", "1 while the ARI event websocket is connected", registry=r
        )
        self.ari_connections = Gauge(
            "phonemfa_ari_connections", "ARI websocket connections made since start", registry=r
        )
        self.store_healthy = Gauge(
            "phonemfa_store_healthy", "1 while the call store can write", registry=r
        )
        self.store_dropped_writes = Counter(
            "phonemfa_store_dropped_writes",
            "Timeline steps and status changes the store gave up writing",
            registry=r,
        )
        self._dropped_seen = 0

    def store_dropped(self, total: int) -> None:
        """The store's own count since open, as a counter (exposed with _total)."""
        if total > self._dropped_seen:
            self.store_dropped_writes.inc(total - self._dropped_seen)
            self._dropped_seen = total

    def started(self, tenant: str, mode: str) -> None:
        self.calls_started.labels(tenant, mode).inc()
        self.calls_in_progress.inc()

    def finished(self, tenant: str, outcome: str, seconds: float, placed: bool = True) -> None:
        self.calls_finished.labels(tenant, outcome).inc()
        if placed:
            self.calls_in_progress.dec()
        self.call_duration.observe(seconds)

    def refused(self, reason: str) -> None:
        self.calls_refused.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
