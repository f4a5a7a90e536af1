"""The one exception type for bad input. The CLI turns it into one line on stderr and exit code 2."""

from __future__ import annotations


class GclError(Exception):
    """Bad input or an impossible request: the message names what is wrong and what was expected."""


class DataError(GclError):
    """A dataset file, row or field that is missing or malformed."""
