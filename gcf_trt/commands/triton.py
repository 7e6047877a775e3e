"""``gcf-trt export-triton``: an engines directory -> a Triton model repository (torch-free)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-triton", help="write a Triton Inference Server model repository from engines",
                       description="Write a Triton model repository (backbone with dynamic batching, head, "
                                   "a sequence-batched ring head keeping each camera's ring as implicit "
                                   "state, and an ensemble clip -> logits).  See docs/TRITON.md.")
    p.add_argument("--engines", required=True, help="engines directory written by 'gcf-trt build'")
    p.add_argument("--out", required=True, help="model repository directory to (re)create atomically")
    p.add_argument("--name", default="gcf", help="model name prefix (default: gcf)")
    p.add_argument("--max-batch", type=int, default=8, help="max_batch_size of every model (default: 8)")
    p.add_argument("--preferred-batch", type=int, nargs="+", default=None,
                   help="dynamic batcher preferred batch sizes (default: powers of two up to --max-batch)")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="max_queue_delay_microseconds of the batchers (default: 2000)")
    p.add_argument("--instances", type=int, default=1, help="backbone instance_group count (default: 1)")
    p.add_argument("--cpu-backend", choices=["onnxruntime", "openvino"], default="onnxruntime",
                   help="Triton backend for a CPU (ONNX) backbone (default: onnxruntime)")
    p.add_argument("--cpu-threads", type=int, default=None, help="intra-op threads per CPU backbone instance")
    p.add_argument("--max-cameras", type=int, default=64,
                   help="sequences (cameras) one ring-head instance holds at once (default: 64)")
    p.add_argument("--idle-s", type=float, default=60.0,
                   help="seconds of silence after which Triton drops a camera's ring (default: 60)")
    p.add_argument("--head-onnx", default=None, help="the head's ONNX graph, if the engines hold only a plan")
    p.add_argument("--no-stateful", action="store_true", help="skip the ring head and the ensemble")
    p.add_argument("--no-verify", action="store_true", help="skip the ring head's numerical check")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ..triton import export_triton, validate_repository
    result = export_triton(args.engines, args.out, name=args.name, max_batch=args.max_batch,
                           preferred_batch_sizes=args.preferred_batch, max_queue_delay_us=args.queue_delay_us,
                           backbone_instances=args.instances, cpu_backend=args.cpu_backend,
                           cpu_threads=args.cpu_threads, stateful=not args.no_stateful,
                           max_cameras=args.max_cameras, sequence_idle_s=args.idle_s,
                           head_onnx=args.head_onnx, verify=not args.no_verify)
    for line in result.summary:
        print(line)
    configs = validate_repository(result.out)
    print(f"{len(configs)} config.pbtxt written through Triton's model_config schema and read back "
          f"(names, files and ensemble wiring checked)")
    return 0
