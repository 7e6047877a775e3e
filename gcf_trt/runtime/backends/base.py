"""The backend interface every runtime implements."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


class Backend(abc.ABC):
    """One loaded graph (backbone or head) on one runtime.

    Subclasses set ``runtime`` and fill ``input_shapes`` / ``output_shapes`` (``-1`` for a
    dynamic dimension) in ``__init__``.  ``precision`` is what the engine really runs in
    (e.g. OpenVINO reports BF16 when it picks it), recorded for the manifest and predictions.
    """

    runtime: str = "abstract"
    #: how many requests the engine can run at once (see :meth:`infer_many`).
    parallel_requests: int = 1

    def __init__(self, path: Path, **options: Any):
        self.path = Path(path)
        self.options = dict(options)
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.output_shapes: dict[str, tuple[int, ...]] = {}
        self.precision: str = "fp32"

    @classmethod
    def check_available(cls) -> None:
        """Raise BackendUnavailable if this runtime cannot run on this machine."""

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph.  ``feeds`` maps input names to arrays; returns output name -> array.

        Returned arrays are owned by the caller (a backend must not reuse their memory).
        """

    def infer_many(self, feeds_list: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run several independent inputs; results in the same order.

        The default runs them one after the other; a backend that can run requests side by
        side (OpenVINO infer requests, ONNX Runtime parallel runs) overrides this and sets
        :attr:`parallel_requests`.
        """
        return [self.infer(feeds) for feeds in feeds_list]

    def close(self) -> None:
        """Release the runtime's resources.  Idempotent."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name!r}, precision={self.precision!r})"
