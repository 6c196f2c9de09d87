"""Adapters of the advanced package: ``memory`` and ``sqlalchemy`` (imported explicitly)."""
