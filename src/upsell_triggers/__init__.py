"""upsell-triggers: usage events in, in-app upgrade prompts out."""

from upsell_triggers import native

__version__ = "0.1.0"
MODE = native.check()  # before any compiled module is imported: a stale one is set aside (native.py)
