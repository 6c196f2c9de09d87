"""Redact values whose key looks like a secret, before they reach a log or a span.

A key is secret-looking when, lower-cased and stripped of everything but
letters and digits, it contains one of :data:`DEFAULT_SECRET_MARKERS`
(``"apiKey"``, ``"api_key"`` and ``"X-Api-Key"`` all contain ``apikey``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Final

__all__ = ["DEFAULT_SECRET_MARKERS", "REDACTED", "Redactor", "is_secret_key", "redact"]

REDACTED: Final = "[REDACTED]"

DEFAULT_SECRET_MARKERS: Final[frozenset[str]] = frozenset(
    {
        "accesskey",
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "passphrase",
        "passwd",
        "password",
        "privatekey",
        "pwd",
        "secret",
        "signature",
        "token",
    }
)

_NON_ALNUM = re.compile(r"[^a-z0-9]")


def _normalise(key: str) -> str:
    return _NON_ALNUM.sub("", key.lower())


class Redactor:
    """Replaces the values of secret-looking keys, recursively.

    Args:
        markers: Key fragments that make a key secret (normalised like keys).
            Defaults to :data:`DEFAULT_SECRET_MARKERS`.
        extra_markers: Fragments to add to ``markers``.
    """

    __slots__ = ("_is_secret", "markers")

    def __init__(
        self, markers: Iterable[str] | None = None, *, extra_markers: Iterable[str] = ()
    ) -> None:
        base = DEFAULT_SECRET_MARKERS if markers is None else markers
        self.markers = frozenset(_normalise(m) for m in (*base, *extra_markers) if m)
        found = self.markers

        # Keys come from message fields, so the set of keys seen is small.
        @lru_cache(maxsize=2048)
        def is_secret(key: str) -> bool:
            norm = _normalise(key)
            return any(marker in norm for marker in found)

        self._is_secret = is_secret

    def is_secret_key(self, key: object) -> bool:
        """True when ``key`` is a string that looks like a secret's name."""
        return isinstance(key, str) and self._is_secret(key)

    def __call__(self, value: Any) -> Any:
        """A copy of ``value`` with secret-looking keys' values replaced by ``[REDACTED]``.

        Walks mappings, lists, tuples and sets; other values are returned as they are.
        """
        if isinstance(value, Mapping):
            return {k: REDACTED if self.is_secret_key(k) else self(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self(v) for v in value]
        return value

    def __repr__(self) -> str:
        return f"Redactor(markers={sorted(self.markers)!r})"


_DEFAULT = Redactor()


def is_secret_key(key: object) -> bool:
    """True when ``key`` looks like the name of a secret (default markers)."""
    return _DEFAULT.is_secret_key(key)


def redact(value: Any) -> Any:
    """``value`` with the values of secret-looking keys replaced, recursively (default markers)."""
    return _DEFAULT(value)
