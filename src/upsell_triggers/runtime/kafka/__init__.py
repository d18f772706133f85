"""The Kafka side of the runtime: Faust/aiokafka compatibility, auth, topics, changelog writes."""
