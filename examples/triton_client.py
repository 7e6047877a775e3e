#!/usr/bin/env python3
"""Stream several cameras to a Triton server serving a ``gcf-trt export-triton`` repository.

Each camera is one Triton *sequence*: its correlation ID (``sequence_id``) is the camera's
number, the first clip is sent with ``sequence_start=True`` (Triton then starts the camera's
ring from the zero ``initial_state``: an empty ring) and the last with ``sequence_end=True``
(Triton frees the ring).  The camera side only decodes and assembles clips (torch-free, the
same :class:`~gcf_trt.runtime.stream.ClipAssembler` as the local runtime); the backbone, the
ring and the head run in Triton (``gcf_stream`` = ``gcf_backbone`` -> ``gcf_ring_head``).

    python examples/triton_client.py --url localhost:8001 --spec REPO/gcf_stream/gcf_trt.json \\
        rtsp://cam1/stream rtsp://cam2/stream video.mp4

Needs ``pip install 'tritonclient[grpc]'`` (or ``[http]`` with ``--protocol http``) and a
running ``tritonserver --model-repository REPO``.  Not run in this project's tests: no Triton
server runs on the build machines (see docs/TRITON.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from gcf_trt.errors import FrameError
from gcf_trt.preprocess import as_bgr
from gcf_trt.runtime.sources import SourceGap, open_source
from gcf_trt.runtime.stream import ClipAssembler
from gcf_trt.spec import ModelSpec


def load_spec(path: str | Path) -> ModelSpec:
    """The ModelSpec from ``gcf_trt.json`` (in the repository's ensemble dir) or a ``manifest.json``."""
    return ModelSpec.from_dict(json.loads(Path(path).read_text())["spec"])


def camera_clips(uri: Any, spec: ModelSpec, **source_options: Any) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
    """Yield ``(clip float32 [1,3,T,H,W], (first, last) source frame)`` for every clip of a source.

    Bad frames are skipped; a source gap drops the partial clip (no clip spans a reconnect).
    """
    assembler = ClipAssembler(spec)
    with open_source(uri, **source_options) as source:
        for item in source:
            if isinstance(item, SourceGap):
                assembler.reset()
                continue
            try:
                bgr = as_bgr(item.image)
            except FrameError:
                continue
            _, frame_range = assembler.push(bgr, item.index)
            if frame_range is not None:
                yield assembler.clip.copy(), frame_range


def stream_camera(client_module, url: str, model: str, camera_id: int, uri: Any, spec: ModelSpec,
                  print_lock: threading.Lock, max_clips: int | None = None) -> int:
    """Send one camera's clips as one Triton sequence; print one line per prediction."""
    client = client_module.InferenceServerClient(url=url)
    outputs = [client_module.InferRequestedOutput("logits"), client_module.InferRequestedOutput("gates")]
    sent = 0
    clips = camera_clips(uri, spec)
    pending = next(clips, None)
    while pending is not None:
        clip, frame_range = pending
        pending = next(clips, None)
        last = pending is None or (max_clips is not None and sent + 1 >= max_clips)
        inp = client_module.InferInput("clip", list(clip.shape), "FP32")
        inp.set_data_from_numpy(clip)
        result = client.infer(model, inputs=[inp], outputs=outputs, sequence_id=camera_id,
                              sequence_start=(sent == 0), sequence_end=last)
        logits = result.as_numpy("logits")[0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(np.argmax(probs))
        with print_lock:
            print(json.dumps({"camera": camera_id, "source": str(uri), "clip": sent, "frames": list(frame_range),
                              "label": spec.labels[best], "score": round(float(probs[best]), 4),
                              "gates": [round(float(g), 4) for g in result.as_numpy("gates")[0]]}), flush=True)
        sent += 1
        if last:
            break
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="camera URIs / video files, one Triton sequence each")
    parser.add_argument("--url", default="localhost:8001", help="Triton endpoint (gRPC 8001, HTTP 8000)")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default="gcf_stream", help="the ensemble (default: gcf_stream)")
    parser.add_argument("--spec", required=True, help="REPO/gcf_stream/gcf_trt.json or an engines manifest.json")
    parser.add_argument("--first-id", type=int, default=1, help="correlation ID of the first camera (non-zero)")
    parser.add_argument("--max-clips", type=int, default=None, help="stop each camera after this many clips")
    args = parser.parse_args(argv)
    if args.first_id < 1:
        parser.error("correlation IDs must be non-zero")
    if args.protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    spec = load_spec(args.spec)
    lock = threading.Lock()
    threads = [threading.Thread(target=stream_camera, daemon=True,
                                args=(client_module, args.url, args.model, args.first_id + i, uri, spec, lock,
                                      args.max_clips))
               for i, uri in enumerate(args.sources)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
