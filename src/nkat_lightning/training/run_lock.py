"""One process per run folder: the same command typed in a second terminal must not train into
a folder that a running process writes (their checkpoints and metrics would mix).

An advisory ``flock`` on ``<run folder>/.lock``: the kernel releases it when its holder dies
(SIGKILL, power cut), so a stale lock never blocks; the file records who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from nkat_lightning.errors import UserError

LOCK_FILE = ".lock"
log = logging.getLogger(__name__)


class RunFolderInUse(UserError):
    """Another process holds the run folder."""


def describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"PID {holder['pid']} on {holder['host']} since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path):
    """Hold ``run_dir`` for this process until the block ends; ``RunFolderInUse`` (one line:
    who holds it and what to do) when another live process does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderInUse(
                f"the run folder {run_dir} is in use by {describe_holder(path.read_text())}: "
                "wait for that run to finish (or stop it), or give this one another folder "
                "(hydra.run.dir=... or a different override)") from None
        except OSError as error:  # a file system without locks (some network ones)
            log.warning(f"cannot lock {run_dir} ({error.strerror}); going on without the lock")
            yield
            return
        previous = os.read(fd, 4096).decode(errors="replace")
        if previous.strip():  # its holder ended without letting go: killed
            log.warning(f"taking over {run_dir} from {describe_holder(previous)}, which is gone")
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released in order: the next holder has nothing to take over
    finally:
        os.close(fd)  # closing releases the flock


def remove_if_empty_run_folder(run_dir: Path) -> None:
    """Remove ``run_dir`` where it holds only what Hydra and the lock put there before the run
    stopped (``.hydra/``, ``*.log``, the lock file): a config or data mistake leaves no empty
    run folder. A folder with anything else in it is left as it is."""
    if not run_dir.is_dir():
        return
    if all(entry.name in (".hydra", LOCK_FILE) or (entry.is_file() and entry.suffix == ".log")
           for entry in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
