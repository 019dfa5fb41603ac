"""The storage-agnostic engine: decorators, registry, run actors, replay, events."""
