"""Which database an engine talks to, named as the database semantic conventions ask.

``db.namespace`` is the database name on PostgreSQL and the database file on
SQLite (an embedded database: no ``server.address``/``server.port``). Computed
once per engine and shared by its unit-of-work steps and its reads, so that a
service map shows one database node per database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from cqrs_ddd_core.persistence.records import DatabaseIdentity

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["database_identity"]

_POSTGRES_PORT = 5432
_identities: WeakKeyDictionary[AsyncEngine, DatabaseIdentity] = WeakKeyDictionary()


def database_identity(engine: AsyncEngine) -> DatabaseIdentity:
    """``db.namespace`` (and ``server.*`` for a server) of ``engine``'s database."""
    found = _identities.get(engine)
    if found is None:
        url = engine.url
        if url.get_backend_name() == "sqlite":
            found = DatabaseIdentity(namespace=url.database or ":memory:")
        else:
            found = DatabaseIdentity(
                namespace=url.database,
                server_address=url.host or "localhost",
                server_port=url.port or _POSTGRES_PORT,
            )
        _identities[engine] = found
    return found
