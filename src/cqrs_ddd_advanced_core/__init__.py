"""CQRS-DDD advanced core: event-sourced persistence as pipeline middlewares."""
