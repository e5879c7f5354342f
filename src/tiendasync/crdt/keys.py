"""Key layout shared by the CRDT views.

Root-map keys are made of parts joined by ``SEP`` (the ASCII unit separator),
which is why names may not contain control characters
(:func:`tiendasync.model.names.check_name`).
"""

from __future__ import annotations

from tiendasync.model.names import MAX_NAME_LENGTH, MAX_SAFE_INTEGER, check_name, check_safe_int

__all__ = ["MAX_NAME_LENGTH", "MAX_SAFE_INTEGER", "ROOT", "SEP", "check_name", "check_safe_int"]

#: Name of the root map in every document.  Short, because it is on the wire.
ROOT = "t"
SEP = "\x1f"
