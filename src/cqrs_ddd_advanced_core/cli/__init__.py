"""The ``cqrs-ddd`` console script (``main.py``) and its ``demo`` command."""
