"""Helpers that drive the real service and broker: used by tests/integration, tests/reliability and bench/.

Not imported by the service itself.
"""
