"""Adapters that drive the engine: the embedded runner (no Kafka) and the Faust worker."""
