"""Paths as a person reads them, and where they lead: no import of the package's own."""

from __future__ import annotations

import os
from collections.abc import Iterable


def printable(path: str) -> str:
    """A path as a user can read it, whatever its bytes: on one line, with no terminal
    escapes (a name may hold a newline or ESC; printed raw they break `top | while read`
    or recolour the terminal), so control characters are shown escaped, e.g. \\n."""
    text = os.fsencode(path).decode("utf-8", "replace")
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def inside_roots(path: str, roots: Iterable[str]) -> bool:
    """Whether `path`, followed through every symlink, lies in one of the library's roots."""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return True
    return False
