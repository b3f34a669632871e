"""Errors meant for users: one sentence naming the file or flag and the fix.

The CLI prints these without a traceback and exits non-zero. `nn/` and `reference/` stay
free of package imports, so they raise their own ValueError subclasses; `user_errors()`
lists every class the CLI treats this way (imported lazily: this module loads no torch).
"""

from __future__ import annotations


class UnetkitError(Exception):
    """A problem the user can fix; str(error) is the whole message."""


def user_errors() -> tuple[type[Exception], ...]:
    """Every exception class whose message is meant for the user as it stands."""
    from unetkit.nn.options import UNetError
    from unetkit.reference.ops import ReferenceInputError

    return (UnetkitError, UNetError, ReferenceInputError)


class UnetkitWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints one line)."""
