"""The trigger engine: pure Python, no Kafka, no wall clock (time comes from events and an injected clock)."""
