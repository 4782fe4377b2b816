"""Errors that carry a one-line message for the user.

The CLI turns :class:`InputError` into exit code 2 and :class:`CheckFailed` into exit code 1,
printing only the message (``--debug`` shows the traceback).
"""

from __future__ import annotations


class WattwiseError(Exception):
    """Base class for errors wattwise raises on purpose."""


class InputError(WattwiseError, ValueError):
    """Bad input from the user: an unknown name, a wrong shape, an unreadable file."""


class UnknownNameError(InputError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnavailableError(WattwiseError):
    """Something that exists but cannot run here (no GPU, no counter, missing package)."""


class WorkloadError(InputError):
    """The user's model or workload raised, or produced NaN, while we ran it."""


class CheckFailed(WattwiseError):
    """A budget given to ``wattwise check`` was broken."""
