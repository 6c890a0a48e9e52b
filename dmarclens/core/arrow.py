"""pyarrow loaded the cheap way, and a garbage-collector pause for bulk object building.

Why a module of its own: every stage that moves records (the parser, the
writer, classification) needs pyarrow, and ``dmarclens ingest`` is timed by
users as a whole command, so how pyarrow is imported (without pandas, and
without NumPy where the process never converts) is decided once, here.
"""
from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any


class _HidePandas:
    """Import hook that makes ``import pandas`` fail, used for one call only."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas hidden while pyarrow checks for it")
        return None


class _HideNumpy:
    """Import hook that makes ``import numpy`` fail (see ``import_pyarrow_without_numpy``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("numpy hidden: this process never converts to NumPy")
        return None


_numpy_free = False


def declare_numpy_free() -> None:
    """Say that this whole process will never convert Arrow data to NumPy or
    pandas (the ``dmarclens ingest`` command: parse, store, classify, exit),
    so pyarrow is loaded without NumPy here too: 0.1 s and 10 MB less."""
    global _numpy_free
    _numpy_free = True


def import_pyarrow_without_numpy() -> Any:
    """pyarrow for a parsing process that dmarclens forked and that exits
    after parsing: loaded without NumPy (optional to pyarrow), which is two
    thirds of its 0.15 s import. NumPy conversions then fail in this process,
    so never call it in a process that runs user code, only in children (or
    where ``declare_numpy_free`` was called).
    """
    _load_pyarrow_hiding_numpy()
    return import_pyarrow()


def _load_pyarrow_hiding_numpy() -> None:
    if "pyarrow" not in sys.modules and "numpy" not in sys.modules:
        hook = _HideNumpy()
        sys.meta_path.insert(0, hook)
        try:
            import pyarrow  # noqa: F401
        finally:
            sys.meta_path.remove(hook)


@lru_cache(maxsize=1)
def import_pyarrow() -> Any:
    """pyarrow, set up so that building arrays from lists never imports pandas.

    ``pyarrow.array()`` first asks whether its argument is a pandas object,
    and to answer it imports pandas: about 0.15 s and 45 MB of RSS in an
    ingest that never touches pandas. The first question is asked here with
    pandas hidden, and pyarrow remembers the answer for plain lists. Real
    pandas interop still works afterwards: ``to_pandas``/``from_pandas``
    check again and import pandas then.
    """
    if _numpy_free:
        _load_pyarrow_hiding_numpy()
    import pyarrow as pa

    if "pandas" not in sys.modules:
        hook = _HidePandas()
        sys.meta_path.insert(0, hook)
        try:
            pa.array([0], pa.int8())
        finally:
            sys.meta_path.remove(hook)
    return pa


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Parsing creates a tuple or two per record and no reference cycles, but
    each allocation burst triggers collections that walk every live object;
    on a 50,000-record report that more than doubles the parse time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
