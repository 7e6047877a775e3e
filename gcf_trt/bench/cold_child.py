"""The cold-start probe: ``python -m gcf_trt.bench.cold_child ENGINES [OPTIONS_JSON] [RUNTIME]``.

Run in a fresh process by :mod:`gcf_trt.bench.sections.cold_start`: imports the runtime (never
torch), loads the engines, pushes 640x480 frames until the first prediction, prints
``GCF_FIRST_PREDICTION`` (the parent stops its clock there), pushes three more predictions'
worth of frames (arenas reach their steady size) and prints ``GCF_COLD_START {json}``.
Nothing but the standard library is imported before the clock starts.
"""
import json
import resource
import sys
import time


def main(argv: list[str]) -> None:
    t0 = time.perf_counter()
    import numpy as np
    from gcf_trt.runtime.stream import StreamingClassifier
    t1 = time.perf_counter()
    options = json.loads(argv[1]) if len(argv) > 1 and argv[1] else None
    runtime = argv[2] if len(argv) > 2 and argv[2] else None
    clf = StreamingClassifier(argv[0], runtime=runtime, options=options)
    t2 = time.perf_counter()
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    pred, pushed = None, 0
    while pred is None:
        pred = clf.push(frame)
        pushed += 1
    t3 = time.perf_counter()
    rss_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("GCF_FIRST_PREDICTION", flush=True)
    for _ in range(3 * clf.spec.stride * clf.spec.frame_step):
        clf.push(frame)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = None
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    print("GCF_COLD_START " + json.dumps({
        "import_s": t1 - t0, "load_s": t2 - t1, "first_prediction_s": t3 - t2, "frames_pushed": pushed,
        "in_process_s": t3 - t0, "maxrss_first_mb": rss_first / 1024, "maxrss_mb": rss / 1024,
        "vmhwm_mb": hwm, "torch_imported": "torch" in sys.modules,
        "modules": sorted(m for m in ("onnxruntime", "openvino", "onnx", "cv2", "tensorrt") if m in sys.modules),
        "backbone": repr(clf.engines.backbone), "head": repr(clf.engines.head)}), flush=True)
    clf.close()


if __name__ == "__main__":
    main(sys.argv[1:])
