"""Progress bars that never leave debris: one place that makes them.

Every bar in gcf-trt comes from :func:`progress_bar` and is used as a context manager::

    with progress_bar(videos, desc="calibration videos", unit="video", enabled=show) as bar:
        for video in bar:
            ...

Why: a tqdm bar that is not closed when an exception passes through leaves its half-drawn
line (``timing trial: 0%|``) above the error message, and a bar on a stderr that is not a
terminal (CI logs, ``2> file``) writes carriage-return debris.  Here bars are closed on any
exit, and drawn only when stderr is a terminal (tqdm's ``disable=None``).  Without tqdm
installed (the torch-free runtime does not need it) the bar is a silent pass-through.
"""
from __future__ import annotations

from typing import Any, Iterable


class _SilentBar:
    """The tqdm surface gcf-trt uses, doing nothing."""

    def __init__(self, iterable: Iterable[Any] | None = None, **_: Any):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def __enter__(self) -> "_SilentBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any):
    """A tqdm bar (closed on exit, hidden unless stderr is a terminal), or a silent stand-in.

    Args:
        iterable: what to iterate over (optional; use ``total=`` and ``update()`` otherwise).
        enabled: False gives the silent stand-in (callers pass their ``progress`` flag).
        kwargs: passed to ``tqdm`` (``desc``, ``unit``, ``total``, ``leave``...); ``leave``
            defaults to False so a finished bar disappears.
    """
    if not enabled:
        return _SilentBar(iterable)
    try:
        from tqdm import tqdm
    except ImportError:
        return _SilentBar(iterable)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("disable", None)  # None: draw only when stderr is a terminal
    return tqdm(iterable, **kwargs)
