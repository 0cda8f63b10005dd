"""Process start-up of the command: Python's cyclic garbage collector waits until the imports are done.

Importing torch, timm, pandas and rich creates a few hundred thousand objects that live until the
process exits, and CPython's collector walks them again and again while they are being created: about
0.7 s of a 5 s start-up on 2 CPU cores (measured with ``gc.callbacks``). ``main`` pauses collection
first thing; each command calls :func:`imports_done` once its libraries are loaded, which moves
everything alive into the permanent generation (``gc.freeze``) and collects again from then on.
Nothing changes for library users: only the command line pauses the collector.
"""

from __future__ import annotations

import gc

_paused_here = False


def pause_collection() -> None:
    """Stop cyclic garbage collection until :func:`imports_done` (reference counting goes on)."""
    global _paused_here
    if gc.isenabled():
        gc.disable()
        _paused_here = True


def imports_done() -> None:
    """Freeze what start-up created and collect again; does nothing unless :func:`pause_collection` paused."""
    global _paused_here
    if _paused_here:
        gc.freeze()
        gc.enable()
        _paused_here = False
