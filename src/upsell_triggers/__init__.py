"""upsell-triggers: usage events in, in-app upgrade prompts out."""

__version__ = "0.1.0"
