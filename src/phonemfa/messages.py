"""Voice message types: the prompts a call can play, as named in config files.

Modelled on Entra ID's customisable voice messages. Tenants may replace any of
them per language under `tenants.<name>.prompts.<lang>.<message type>`; the
prompt catalog maps each to Asterisk media.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["MessageType"]


class MessageType(StrEnum):
    GREETING = "greeting"
    """Direct call or after the transfer: "...press the pound key to finish"."""
    GREETING_FRAUD = "greeting_fraud"
    """The greeting that also offers the fraud code ("press 0 then pound...")."""
    EXTENSION_PROMPT = "extension_prompt"
    """Auto attendant mode, after the extension digits: "...press pound to continue"."""
    OPERATOR_TRANSFER = "operator_transfer"
    """Operator mode, before the extension digits: "...please transfer this call to"."""
    OPERATOR_AFTER_DIGITS = "operator_after_digits"
    """Operator mode, after the digits: "If already at this extension, press pound"."""
    CODE_PROMPT = "code_prompt"
    """Number matching: "enter the code shown on your screen"."""
    CODE_PROMPT_FRAUD = "code_prompt_fraud"
    """Number matching prompt that also offers the fraud code."""
    SUCCESS = "success"
    DENIED = "denied"
    RETRY = "retry"
    NO_INPUT = "no_input"
    FRAUD_CONFIRMATION = "fraud_confirmation"
    GOODBYE = "goodbye"
    ORGANIZATION_NAME = "organization_name"
    """A recording of the organisation's name, spoken in the greeting."""
