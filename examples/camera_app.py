"""Minimal camera app: stream a URI through GCF-Net, print predictions, optionally save an overlay.

    python examples/camera_app.py 0 --engines engines/                 # first camera
    python examples/camera_app.py rtsp://user:pass@cam/stream --engines engines/ --draw out.mp4
"""
import argparse

import cv2

from gcf_trt.runtime import SourceGap, StreamingClassifier, draw_prediction, open_source, redact

parser = argparse.ArgumentParser()
parser.add_argument("uri", help="file, camera index, /dev/videoN, rtsp:// or http(s):// URL")
parser.add_argument("--engines", required=True, help="engines directory from 'gcf-trt build'")
parser.add_argument("--draw", metavar="VIDEO", help="also write the frames with label and gate bar")
args = parser.parse_args()

writer, latest = None, None
with StreamingClassifier(args.engines) as classifier, open_source(args.uri) as source:
    print(f"streaming {redact(args.uri)} ({source.fps or '?'} fps)")  # never print credentials
    for item in source:
        if isinstance(item, SourceGap):  # a live source dropped and came back
            classifier.note_gap(item.frames_missed, item.seconds, item.reason)
            continue
        prediction = classifier.push(item.image, item.index)
        if prediction is not None:
            latest = prediction
            print(f"clip {prediction.clip_index}: {prediction.label} {prediction.score:.2f} "
                  f"frames {prediction.frame_range} gates {[round(g.gate, 2) for g in prediction.gates]}")
        if args.draw and item.image.ndim == 3 and item.image.shape[2] == 3:
            if writer is None:
                h, w = item.image.shape[:2]
                writer = cv2.VideoWriter(args.draw, cv2.VideoWriter_fourcc(*"mp4v"), source.fps or 25, (w, h))
            writer.write(draw_prediction(item.image, latest, classifier.spec.ring_size))
if writer is not None:
    writer.release()
