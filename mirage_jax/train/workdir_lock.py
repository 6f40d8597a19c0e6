"""One training run per workdir: ``WorkdirLock(workdir)`` holds an exclusive lock while a run writes there.

A second ``mirage-jax train`` on a workdir in use would replace the first's checkpoints and interleave its
``metrics.jsonl``; it is refused instead, naming the run that holds the lock. The lock is an ``flock`` on
``WORKDIR/.lock``: the kernel releases it when the holder exits, however it exits (``kill -9`` included), so a
crashed run never leaves a stale lock. In a multi-process run process 0 holds it for everyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"


class WorkdirLock:
    """Context manager: takes the lock or raises ``ValueError`` naming the holder (pid, host, start time)."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / LOCK_FILE
        self._file = None

    def __enter__(self) -> WorkdirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(f"--workdir {str(self.path.parent)!r} is in use by another training run ({holder}); "
                             "wait for it to finish or choose another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
