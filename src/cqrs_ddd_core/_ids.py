"""Random identifiers in the canonical UUID4 text form, made cheaply.

``str(uuid.uuid4())`` builds and validates a ``UUID`` object only to print it
(~3 µs on the reference machine); every dispatch needs one or two ids. This
takes the same 16 bytes from ``os.urandom`` and formats them directly
(~1 µs), setting the version (4) and variant (RFC 4122) bits the same way.
"""

from __future__ import annotations

import hashlib
import os
import uuid

__all__ = ["derived_id", "new_id"]

_urandom = os.urandom
# The variant nibble keeps its two low bits and gets the high bits 10 (8, 9, a, b).
_VARIANT = {f"{i:x}": "89ab"[i & 3] for i in range(16)}


def new_id() -> str:
    """A new random identifier (UUID4, canonical lowercase text form)."""
    h = _urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_sha1 = hashlib.sha1
# The namespace of derived event ids (a fixed UUID: changing it changes every id).
EVENT_ID_NAMESPACE = uuid.UUID("6f1d0c52-9a4e-4f63-8f0b-2b7c3a1e5d90")
_NAMESPACE = EVENT_ID_NAMESPACE.bytes


def derived_id(message_id: str, aggregate_type: str, aggregate_id: str, ordinal: int) -> str:
    """The id of the ``ordinal``-th event (1, 2, ...) a command records on a stream.

    The same inputs give the same id, so a command run again (a retry, with
    the same message id) stages the same event ids, and the store recognises
    a unit of work that committed before. It equals ``str(uuid.uuid5(
    EVENT_ID_NAMESPACE, name))`` with ``name`` the four values joined by
    ``"\\x1f"``, made without the ``UUID`` object (about 1 µs).
    """
    name = f"{message_id}\x1f{aggregate_type}\x1f{aggregate_id}\x1f{ordinal}"
    h = _sha1(_NAMESPACE + name.encode("utf-8", "surrogatepass"), usedforsecurity=False)
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"
