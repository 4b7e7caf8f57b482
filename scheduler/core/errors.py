"""Errors raised by the scheduling core.

The core validates every RPC argument before it touches any state, so a caller that sends
garbage gets a precise error and the scheduler is left exactly as it was.  The HTTP layer maps
``InvalidArgument`` to a 4xx reply with the message in a JSON body.
"""

from __future__ import annotations


class InvalidArgument(ValueError):
    """An RPC argument has the wrong type or an unusable value.

    It subclasses ``ValueError`` so that generic callers which already treat ``ValueError`` as
    "bad input" keep working; the message always names the method and the argument, e.g.
    ``"add_task: 'priority' must be a number, got 'abc'"``.
    """
