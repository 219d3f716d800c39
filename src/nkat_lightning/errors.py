"""Errors meant for the user: the entry points print their message, not a traceback."""

from __future__ import annotations


def describe(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (just the type when the message is empty)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__


class UserError(Exception):
    """A problem the user can fix (config, data); its message says what and how."""


class ConfigError(UserError):
    """An invalid config value, caught before any work starts."""


class DataNotFoundError(UserError):
    """No source of a data set worked; the message lists each one tried."""

    def __init__(self, name: str, tried: list[str], hint: str) -> None:
        lines = "\n".join(f"  - {item}" for item in tried)
        super().__init__(f"data set '{name}' is not available. Tried:\n{lines}\nFix: {hint}.")


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; the run stops and keeps its last good
    checkpoint."""
