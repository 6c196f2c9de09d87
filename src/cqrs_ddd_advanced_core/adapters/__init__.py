"""Broker adapters of the advanced package (``rabbitmq``); import them explicitly."""
