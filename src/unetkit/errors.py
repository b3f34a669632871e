"""Errors meant for users: one sentence naming the file or flag and the fix.

The CLI prints these without a traceback and exits non-zero. `nn/` and `reference/` stay
free of package imports, so they raise their own ValueError subclasses; USER_ERRORS lists
every class the CLI treats this way.
"""

from __future__ import annotations

from unetkit.nn.blocks import UNetError
from unetkit.reference.ops import ReferenceInputError


class UnetkitError(Exception):
    """A problem the user can fix; str(error) is the whole message."""


USER_ERRORS: tuple[type[Exception], ...] = (UnetkitError, UNetError, ReferenceInputError)
