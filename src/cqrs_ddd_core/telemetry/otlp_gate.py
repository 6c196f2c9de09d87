"""OTLP export that costs next to nothing, and says so once, when no collector listens.

The OTLP exporters retry a refused connection with backoff until their
timeout (10 s by default), on every export: at shutdown the span processor
and the metric reader each export a last time, so an application whose
collector is absent waited about 15 s to exit and printed a screenful of
exporter errors. :func:`gated` gives an exporter class a gate shared by every
exporter of one collector address:

* before the first export, and at most every :data:`RETRY_S` seconds while the
  collector is away, the gate tries a TCP connection to it (bounded by
  :data:`PROBE_TIMEOUT_S`);
* while it is away, exports are dropped at once (the exporter reports a
  failure, as it would have after its retries);
* the first time it is found away, one warning line is logged
  (``telemetry_collector_unreachable``, with the endpoint), and the exporters'
  own error records for that collector are silenced until it answers again.

A collector that answers is exported to as before, with no extra cost per
export (one attribute read).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Final
from urllib.parse import urlsplit

import structlog

__all__ = ["PROBE_TIMEOUT_S", "RETRY_S", "CollectorGate", "gate_for", "gated", "otlp_endpoint"]

PROBE_TIMEOUT_S: Final = 0.25
"""How long a reachability probe may take."""
RETRY_S: Final = 5.0
"""How often an absent collector is probed again."""

_log = structlog.get_logger("cqrs_ddd_core.telemetry")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class CollectorGate:
    """Whether the collector at ``host:port`` is reachable, shared by its exporters.

    Attributes:
        endpoint: The URL the exporters send to (for the warning).
        up: True (reachable), False (away) or None (not probed yet).
    """

    def __init__(self, endpoint: str, host: str, port: int) -> None:
        self.endpoint = endpoint
        self.up: bool | None = None
        self._address = (host, port)
        self._checked = 0.0
        self._warned = False
        self._lock = threading.Lock()

    def open(self) -> bool:
        """True when an export should be attempted now."""
        if self.up:
            return True
        with self._lock:
            now = time.monotonic()
            if self.up is False and now - self._checked < RETRY_S:
                return False
            self._checked = now
            self._set(self._probe())
            return bool(self.up)

    def failed(self) -> None:
        """An export failed: find out whether the collector went away."""
        with self._lock:
            self._checked = time.monotonic()
            self._set(self._probe())

    def _set(self, up: bool) -> None:
        if not up and not self._warned:
            self._warned = True
            _log.warning(
                "telemetry_collector_unreachable",
                endpoint=self.endpoint,
                hint=f"nothing accepts connections there; telemetry for it is dropped and "
                f"the address is tried again every {RETRY_S:g} s",
            )
        elif up and self.up is False:
            _log.info("telemetry_collector_reachable", endpoint=self.endpoint)
        self.up = up

    def _probe(self) -> bool:
        try:
            with socket.create_connection(self._address, timeout=PROBE_TIMEOUT_S):
                return True
        except OSError:
            return False

    def quiet(self, record: logging.LogRecord) -> bool:
        """A logging filter: the exporters' own records pass only while the collector is up."""
        return self.up is not False or record.levelno < logging.WARNING

    def __repr__(self) -> str:
        return f"CollectorGate({self.endpoint!r}, up={self.up})"


_gates: dict[tuple[str, int], CollectorGate] = {}
_gates_lock = threading.Lock()


def otlp_endpoint(signal: str, protocol: str, given: str | None) -> str:
    """The URL an OTLP exporter of ``signal`` sends to, as the exporters resolve it.

    ``given`` (an explicit ``endpoint=``) first, then
    ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` (as is), then
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, then the protocol's default.
    """
    if given:
        return given
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"


def gate_for(endpoint: str) -> CollectorGate | None:
    """The shared gate of the collector ``endpoint`` points at (None: not a usable URL)."""
    parts = urlsplit(endpoint if "//" in endpoint else f"http://{endpoint}")
    if not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    except ValueError:
        return None
    key = (parts.hostname, port)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = CollectorGate(endpoint, parts.hostname, port)
    return gate


def gated(exporter_class: Any, failure: Any, gate: CollectorGate) -> Any:
    """A subclass of ``exporter_class`` whose ``export`` passes through ``gate``.

    Args:
        exporter_class: An OTLP span or metric exporter class.
        failure: The value its ``export`` returns on failure (``SpanExportResult.FAILURE``...).
        gate: The collector's gate.
    """
    logger = logging.getLogger(exporter_class.__module__)
    if not any(getattr(f, "__self__", None) is gate for f in logger.filters):
        logger.addFilter(gate.quiet)

    def export(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not gate.open():
            return failure
        result = super(cls, self).export(*args, **kwargs)
        if result == failure:
            gate.failed()
        return result

    cls: Any = type(f"Gated{exporter_class.__name__}", (exporter_class,), {"export": export})
    return cls
