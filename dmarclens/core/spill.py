"""A big report's Arrow record batches kept in files instead of memory.

Why: the parser turns every few thousand records into an Arrow batch. Held
in memory, a 200,000-record report's batches are ~35 MB in the process that
parses it and again in the writer, which receives them all before its
INSERT; a million-record report, five times that. Written to a file as they
are made, they cross to the writer as a path, and the writer reads them back
one batch at a time while inserting, so neither process grows with the
report.

Files live in a directory the writer creates for one report and removes once
it has the result (``dmarclens.ingest.pool._isolated``); the writer first
``adopt``s them (opens, then unlinks), so they disappear with the process
whatever happens to it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any


class SpilledBatches:
    """A list-like run of Arrow record batches stored in Arrow IPC files.

    Supports what the parser and the writer do with a batch list: ``append``,
    iteration (in order), ``len`` and truth. It pickles as file paths.
    """

    def __init__(self, directory: str) -> None:
        self._start(directory)

    def _start(self, directory: str) -> None:
        self._dir = directory
        self._files: list[tuple[str, int]] = []  # finished files: (path, batches)
        self._handles: dict[str, Any] = {}  # adopted files: path -> open file (the path is gone)
        self._writer: Any = None
        self._sink: Any = None
        self._path = ""
        self._count = 0

    @property
    def directory(self) -> str:
        return self._dir

    def append(self, batch: Any) -> None:
        from dmarclens.core.arrow import import_pyarrow

        if self._writer is None:
            pa = import_pyarrow()
            fd, self._path = tempfile.mkstemp(dir=self._dir, suffix=".arrow")
            os.close(fd)
            self._sink = pa.OSFile(self._path, "wb")
            self._writer = pa.ipc.new_file(self._sink, batch.schema)
            self._count = 0
        self._writer.write_batch(batch)
        self._count += 1

    def finish(self) -> None:
        """Close the file being written (before the batches are read or sent)."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._files.append((self._path, self._count))
            self._writer = self._sink = None

    def extend(self, other: SpilledBatches | list[Any]) -> None:
        if isinstance(other, SpilledBatches):
            self.finish()
            other.finish()
            self._files.extend(other._files)
            self._handles.update(other._handles)
            other._files, other._handles = [], {}
        else:
            for batch in other:
                self.append(batch)
            self.finish()

    def __len__(self) -> int:
        return sum(n for _, n in self._files) + (self._count if self._writer is not None else 0)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[Any]:
        from dmarclens.core.arrow import import_pyarrow

        pa = import_pyarrow()
        self.finish()
        for path, n in self._files:
            handle = self._handles.get(path)
            source = pa.OSFile(path) if handle is None else pa.PythonFile(handle, mode="r")
            reader = pa.ipc.open_file(source)
            for i in range(n):
                yield reader.get_batch(i)
            if handle is None:
                source.close()

    def adopt(self) -> None:
        """Open every file and unlink it: from now on the files live as long as
        this object (the writer's copy) and no longer than this process."""
        for path, _ in self._files:
            if path not in self._handles:
                self._handles[path] = open(path, "rb")  # noqa: SIM115 - held until close()
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        self.finish()
        return {"dir": self._dir, "files": self._files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._start(state["dir"])
        self._files = list(state["files"])

    def __repr__(self) -> str:
        return f"SpilledBatches(files={len(self._files)}, batches={len(self)})"
