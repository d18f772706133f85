"""The hot topics' records as aiokafka's own record objects, not ConsumerRecords.

aiokafka wraps every fetched record in a ConsumerRecord (a dataclass of 11 fields, with sizes and a
headers tuple computed in Python): 7.7% of the worker's samples, on the consumer thread that shares the
GIL with the handler. The batch path reads only offset, timestamp, key and value, which aiokafka's own
(Cython) record object already has, so for the hot topics that object is handed on as is. Other topics
(the changelog, read by Faust's path) keep ConsumerRecord. The patch itself is compat's (it replaces a
private method of aiokafka's fetcher, for the whole process).
"""

from __future__ import annotations

from upsell_triggers.runtime.kafka import compat

_RAW_RECORD_TOPICS: set[str] = set()


def serve_raw_records(topics: frozenset[str]) -> None:
    """Hands the records of `topics` on raw from now on (idempotent; topics accumulate)."""
    _RAW_RECORD_TOPICS.update(topics)
    compat.serve_raw_records(_RAW_RECORD_TOPICS)
