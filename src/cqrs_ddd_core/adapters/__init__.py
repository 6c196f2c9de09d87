"""Adapters that implement the persistence ports, one sub-package per technology."""
