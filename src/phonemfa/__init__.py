"""phonemfa: a self-hosted phone-call second factor on Asterisk."""

__version__ = "0.1.0"
