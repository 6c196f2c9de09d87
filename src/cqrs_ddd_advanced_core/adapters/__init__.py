"""Adapters of the advanced package: ``memory`` and ``sqlalchemy`` (saga stores) and
``rabbitmq`` (the broker); import them explicitly."""
