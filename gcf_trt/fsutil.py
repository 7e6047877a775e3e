"""Atomic outputs: a whole directory (:func:`atomic_output_dir`) or one file (:func:`atomic_file`).

Both write beside the target (same filesystem, so the final ``os.replace`` is atomic), fsync
what they wrote before the rename and the parent directory after it, so a reader or a crash
sees the old output or the new one, whole, never half of either.

Concurrency (several processes building to one ``--out``): every temp dir is held with an
exclusive ``flock`` for as long as its build runs; the clean-up of temp dirs left by a killed
process removes only those whose lock can be taken (the kernel drops a dead process's locks,
``kill -9`` included), never a running build's.  Clean-up, creation and the final swap happen
under a lock on the parent directory, so two builds that finish together replace the target
one after the other (the last one wins) instead of colliding in the rename.  POSIX only
(``fcntl``), which is every platform gcf-trt supports (Linux, Jetson, macOS).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (directories: so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the data is still written
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[int | None]:
    """An exclusive flock on ``path`` (a file or a directory); yields None when not blocking and taken."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _remove_stale(parent: Path, name: str) -> None:
    """Remove temp dirs of builds that no longer run (their lock is free); keep running ones."""
    for stale in parent.glob(f".{name}.tmp-*"):
        try:
            with _flock(stale, blocking=False) as fd:
                if fd is None:
                    continue  # a live build holds it
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue  # vanished meanwhile (its build finished or another clean-up got it)
    for old in parent.glob(f".{name}.old-*"):
        # .old-* exist only between two renames of a swap, which runs under the parent lock
        # we hold now: one left over is from a process killed mid-swap.
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target`` as a whole.

    On any exception (or ``kill -9``) ``target`` is left as it was: the temp dir is a hidden
    sibling ``.NAME.tmp-*`` removed on failure; one left by a killed process is removed by the
    next build to the same target, one of a build still running is not touched.  Concurrent
    builds to one target each end with a complete directory swapped in; the last to finish wins.
    """
    target = Path(target).absolute()
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with _flock(parent):
            _remove_stale(parent, target.name)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
            # mkdtemp makes the dir 0700; the finished output gets the usual umask permissions.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)
            hold = os.open(tmp, os.O_RDONLY)  # locked before the parent lock is released
            fcntl.flock(hold, fcntl.LOCK_EX)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync_path(path)
        _fsync_path(tmp)
        old = None
        with _flock(parent):
            if target.exists():
                old = parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
                os.replace(target, old)
            os.replace(tmp, target)
            _fsync_path(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(hold)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    Write the file at the yielded path with any writer (``open``, ``onnx.save``, OpenCV; the
    temp name keeps ``path``'s suffix, which some writers read).  On an exception the temp file
    is removed and ``path`` keeps its old content.  Readers see the old file or the new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent if str(path.parent) else Path("."))
    finally:
        tmp.unlink(missing_ok=True)
