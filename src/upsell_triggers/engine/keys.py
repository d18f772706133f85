"""Composite keys and hash inputs: the parts of one key joined by one separator, built here only.

The separator is the ASCII unit separator, which no id, metric, rule or feature name can contain, so
two different lists of parts never make the same key. Account state keys its per-feature entries with
it (`feature_key`), and stable ids (prompts, holdout, variants, feedback events) hash keys made of it:
changing it would change every stored key and id.
"""

from __future__ import annotations

from typing import Final

SEP: Final = "\x1f"


def composite_key(*parts: str) -> str:
    """The parts joined by SEP: the input of a stable hash or the key of a per-pair cache."""
    return SEP.join(parts)


def feature_key(name: str, feature: str | None) -> str:
    """The key of a per-feature entry: a rolling series (metric name) or a rule state (rule id), with
    the paywall feature it counts; the name alone for an entry without a feature."""
    return name if feature is None else name + SEP + feature


def split_feature_key(key: str) -> tuple[str, str | None]:
    """feature_key() undone: (name, feature or None)."""
    name, sep, feature = key.partition(SEP)
    return (name, feature) if sep else (name, None)


def has_feature(key: str, feature: str) -> bool:
    """Whether key is feature_key(name, feature) for some name."""
    return key.endswith(SEP + feature)
