"""Triton Inference Server model repository from a gcf-trt engines directory (torch-free).

``export_triton(engines_dir, out_repo)`` writes (names use the ``name`` prefix, default ``gcf``)::

    REPO/
      gcf_backbone/   config.pbtxt  1/model.plan | 1/model.onnx   clip [3,T,H,W] -> descriptor [D]
                      (dynamic batching: clips of many cameras in one call)
      gcf_head/       config.pbtxt  1/model.plan | 1/model.onnx   descriptors [N,D], mask [N] -> logits [C], gates [N]
                      labels.txt    (stateless head, for clients that keep the ring themselves)
      gcf_ring_head/  config.pbtxt  1/model.onnx  labels.txt      descriptor [D] -> logits [C], gates [N]
                      (sequence batching with implicit state: Triton keeps each camera's ring
                      [N,D] and mask [N] under the request's correlation ID; zero initial state
                      = an empty ring)
      gcf_stream/     config.pbtxt  1/ (empty)  gcf_trt.json     clip -> logits, gates
                      (ensemble backbone -> ring_head: what a camera calls, once per clip, with
                      sequence_id = camera id, sequence_start on its first clip)

Backends: a component the manifest runs on TensorRT ships as ``tensorrt_plan``; every other
component ships its ONNX file to ``onnxruntime_onnx``.  OpenVINO-chosen CPU engines keep their
ONNX file too; ``cpu_backend="openvino"`` serves the *backbone* with Triton's OpenVINO backend
(``default_model_filename: "model.onnx"``) instead.  The ring head always runs on ONNX Runtime:
implicit state is supported only by the onnxruntime, tensorrt and pytorch backends.

``ring_head`` is built here with ``onnx.helper`` from ``head.onnx``: Slice/Concat nodes prepended
to the head graph shift the ring one slot left and append the new descriptor in slot N-1 (the
DESIGN.md ring order), and the shifted ring/mask are also graph outputs (``ring_out``,
``mask_out``) that Triton feeds back as ``ring_in``/``mask_in`` on the camera's next request.
It is checked numerically with ONNX Runtime against feeding ``head.onnx`` directly.

Every ``config.pbtxt`` is written through Triton's own protobuf schema (``tritonclient`` ships
``model_config_pb2``; ``pip install 'gcf-trt[triton]'``), so it is schema-correct by
construction, and :func:`validate_repository` parses them back and checks names, files and the
ensemble wiring.  The backbone's dynamic batcher has ``preserve_ordering: true``.  Triton
itself is not run here (no server on the build machines).
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from . import __version__
from .errors import BackendUnavailable, EngineError, InputError
from .fsutil import atomic_output_dir
from .manifest import Manifest, read_manifest, sha256_file, verify_files
from .spec import BACKBONE_OUTPUT, HEAD_INPUTS, HEAD_OUTPUTS

CONFIG_NAME = "config.pbtxt"
VERSION = "1"
RING_INPUTS = (BACKBONE_OUTPUT, "ring_in", "mask_in")
RING_OUTPUTS = (*HEAD_OUTPUTS, "ring_out", "mask_out")
RING_CHECK_ATOL = 1e-5
CPU_BACKENDS = ("onnxruntime", "openvino")

_ONNX_TO_TRITON = {
    TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16", TensorProto.BFLOAT16: "TYPE_BF16",
    TensorProto.DOUBLE: "TYPE_FP64", TensorProto.INT8: "TYPE_INT8", TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.INT16: "TYPE_INT16", TensorProto.INT32: "TYPE_INT32", TensorProto.INT64: "TYPE_INT64",
    TensorProto.BOOL: "TYPE_BOOL",
}


# --- config.pbtxt through Triton's own schema ----------------------------------------------------
def to_pbtxt(config: dict[str, Any]) -> str:
    """``config`` (nested dicts, proto field names, enum names as strings) as ``config.pbtxt``.

    Written through Triton's protobuf ``ModelConfig`` (``json_format.ParseDict``, then
    ``text_format.MessageToString``), so an unknown field, a wrong type or a bad enum value
    fails here instead of in Triton: the configs are schema-correct by construction.
    """
    from google.protobuf import json_format, text_format
    pb2 = load_model_config_pb2()
    clean = {k: v for k, v in config.items() if v is not None}
    try:
        message = json_format.ParseDict(clean, pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise EngineError(f"Triton model config {config.get('name')!r} does not fit Triton's schema: {exc}",
                          hint="report this as a bug with the engines' manifest") from exc
    return text_format.MessageToString(message)


# --- ONNX helpers ------------------------------------------------------------------------------
def _io(graph: onnx.GraphProto) -> dict[str, tuple[int, list[int]]]:
    """name -> (onnx elem type, dims with -1 for symbolic) for graph inputs and outputs."""
    out = {}
    for v in list(graph.input) + list(graph.output):
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        out[v.name] = (tt.elem_type, dims)
    return out


def triton_dtype(elem_type: int) -> str:
    if elem_type not in _ONNX_TO_TRITON:
        raise EngineError(f"ONNX element type {TensorProto.DataType.Name(elem_type)} has no Triton data type")
    return _ONNX_TO_TRITON[elem_type]


def build_ring_head(head: onnx.ModelProto, ring_size: int, dim: int,
                    descriptors: str = HEAD_INPUTS[0], mask: str = HEAD_INPUTS[1]) -> onnx.ModelProto:
    """Prepend the ring update to ``head``.

    Result: ``descriptor`` [B,D], ``ring_in`` [B,N,D], ``mask_in`` [B,N] ->
    ``logits``, ``gates`` (the head on the updated ring), ``ring_out`` [B,N,D], ``mask_out`` [B,N],
    where ``ring_out = concat(ring_in[:, 1:], descriptor[:, None])`` (oldest first, newest in slot
    N-1) and ``mask_out = concat(mask_in[:, 1:], 1)``.  Zero ``ring_in``/``mask_in`` is an empty ring.
    """
    model = onnx.ModelProto()
    model.CopyFrom(head)
    graph = model.graph
    io = _io(graph)
    for name in (descriptors, mask):
        if name not in {v.name for v in graph.input}:
            raise EngineError(f"head graph has no input {name!r} (inputs: {[v.name for v in graph.input]})")
    desc_type, desc_dims = io[descriptors]
    mask_type, mask_dims = io[mask]
    if desc_dims[1:] != [ring_size, dim] or mask_dims[1:] != [ring_size]:
        raise EngineError(f"head inputs {desc_dims}, {mask_dims} do not match ring size {ring_size}, dim {dim}")
    taken = {n for node in graph.node for n in list(node.input) + list(node.output)}
    taken |= {v.name for v in list(graph.input) + list(graph.output)} | {i.name for i in graph.initializer}
    for name in RING_INPUTS + ("ring_out", "mask_out"):
        if name in taken:
            raise EngineError(f"head graph already uses the name {name!r}; cannot add the ring update")

    p = "gcf_ring/"
    consts = [
        helper.make_tensor(p + "one", TensorProto.INT64, [1], [1]),
        helper.make_tensor(p + "zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor(p + "big", TensorProto.INT64, [1], [np.iinfo(np.int64).max]),
    ]
    nodes = [
        # ring_out = concat(ring_in[:, 1:], descriptor[:, None, :]) along axis 1
        helper.make_node("Unsqueeze", ["descriptor", p + "one"], [p + "desc3"], name=p + "unsqueeze"),
        helper.make_node("Slice", ["ring_in", p + "one", p + "big", p + "one"], [p + "ring_tail"], name=p + "ring_tail"),
        helper.make_node("Concat", [p + "ring_tail", p + "desc3"], ["ring_out"], axis=1, name=p + "ring_cat"),
        # mask_out = concat(mask_in[:, 1:], ones[B, 1]) along axis 1
        helper.make_node("Slice", ["mask_in", p + "one", p + "big", p + "one"], [p + "mask_tail"], name=p + "mask_tail"),
        helper.make_node("Shape", ["mask_in"], [p + "mask_shape"], name=p + "shape"),
        helper.make_node("Slice", [p + "mask_shape", p + "zero", p + "one", p + "zero"], [p + "batch"], name=p + "batch"),
        helper.make_node("Concat", [p + "batch", p + "one"], [p + "col_shape"], axis=0, name=p + "col_shape"),
        helper.make_node("ConstantOfShape", [p + "col_shape"], [p + "ones"], name=p + "ones",
                         value=helper.make_tensor(p + "one_f", mask_type, [1], [1])),
        helper.make_node("Concat", [p + "mask_tail", p + "ones"], ["mask_out"], axis=1, name=p + "mask_cat"),
        # the head reads the updated ring under its own input names
        helper.make_node("Identity", ["ring_out"], [descriptors], name=p + "to_head_descriptors"),
        helper.make_node("Identity", ["mask_out"], [mask], name=p + "to_head_mask"),
    ]
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    graph.initializer.extend(consts)
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info("descriptor", desc_type, ["batch", dim]),
        helper.make_tensor_value_info("ring_in", desc_type, ["batch", ring_size, dim]),
        helper.make_tensor_value_info("mask_in", mask_type, ["batch", ring_size]),
    ])
    graph.output.extend([
        helper.make_tensor_value_info("ring_out", desc_type, ["batch", ring_size, dim]),
        helper.make_tensor_value_info("mask_out", mask_type, ["batch", ring_size]),
    ])
    graph.name = (graph.name or "head") + "_ring"
    onnx.checker.check_model(model, full_check=True)
    return model


def check_ring_head(ring_head: onnx.ModelProto | str | os.PathLike, head: onnx.ModelProto | str | os.PathLike,
                    ring_size: int, dim: int, batch: int = 3, steps: int | None = None,
                    seed: int = 0) -> float:
    """Max |difference| between ``ring_head`` and ``head`` fed the equivalent ring, with ORT.

    Two checks: (1) random ring states and descriptors in one call; (2) a sequence of ``steps``
    clips from the zero (empty) state, feeding ``ring_out``/``mask_out`` back like Triton's
    implicit state, against the head on the ring built by hand in the DESIGN.md order.
    """
    import onnxruntime as ort

    def session(model):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    rh, hd = session(ring_head), session(head)
    rng = np.random.default_rng(seed)
    worst = 0.0

    def compare(a: dict, b: dict) -> float:
        return max(float(np.abs(a[k] - b[k]).max()) for k in ("logits", "gates"))

    # (1) arbitrary states (a full ring, an empty one, a partly filled one)
    desc = rng.standard_normal((batch, dim), dtype=np.float32)
    ring = rng.standard_normal((batch, ring_size, dim), dtype=np.float32)
    mask = np.ones((batch, ring_size), np.float32)
    mask[min(1, batch - 1)] = 0.0
    mask[batch - 1, : ring_size // 2] = 0.0
    got = dict(zip(RING_OUTPUTS, rh.run(list(RING_OUTPUTS), {RING_INPUTS[0]: desc, "ring_in": ring, "mask_in": mask})))
    want_ring = np.concatenate([ring[:, 1:], desc[:, None]], axis=1)
    want_mask = np.concatenate([mask[:, 1:], np.ones((batch, 1), np.float32)], axis=1)
    if not (np.array_equal(got["ring_out"], want_ring) and np.array_equal(got["mask_out"], want_mask)):
        return float("inf")
    want = dict(zip(HEAD_OUTPUTS, hd.run(list(HEAD_OUTPUTS), {HEAD_INPUTS[0]: want_ring, HEAD_INPUTS[1]: want_mask})))
    worst = max(worst, compare(got, want))

    # (2) a stream from the empty ring, longer than the ring so it wraps
    steps = steps or ring_size + 3
    ring = np.zeros((batch, ring_size, dim), np.float32)
    mask = np.zeros((batch, ring_size), np.float32)
    history: list[np.ndarray] = []
    for _ in range(steps):
        desc = rng.standard_normal((batch, dim), dtype=np.float32)
        history.append(desc)
        got = dict(zip(RING_OUTPUTS, rh.run(list(RING_OUTPUTS), {RING_INPUTS[0]: desc, "ring_in": ring, "mask_in": mask})))
        recent = history[-ring_size:]
        ref_ring = np.zeros((batch, ring_size, dim), np.float32)
        ref_mask = np.zeros((batch, ring_size), np.float32)
        ref_ring[:, ring_size - len(recent):] = np.stack(recent, axis=1)
        ref_mask[:, ring_size - len(recent):] = 1.0
        if not (np.array_equal(got["ring_out"], ref_ring) and np.array_equal(got["mask_out"], ref_mask)):
            return float("inf")
        want = dict(zip(HEAD_OUTPUTS, hd.run(list(HEAD_OUTPUTS), {HEAD_INPUTS[0]: ref_ring, HEAD_INPUTS[1]: ref_mask})))
        worst = max(worst, compare(got, want))
        ring, mask = got["ring_out"], got["mask_out"]
    return worst


# --- the repository ------------------------------------------------------------------------------
@dataclass
class TritonExport:
    """What :func:`export_triton` wrote."""

    out: Path
    models: dict[str, str]                      # model name -> role
    ring_check: float | None = None             # max |ring_head - head| (None: no ring head)
    summary: list[str] = field(default_factory=list)


def _onnx_source(engines_dir: Path, manifest: dict[str, Any], name: str, override: str | os.PathLike | None,
                 prefer_fp32: bool = False) -> Path | None:
    """The ONNX graph of a component: its file, or the one a TensorRT plan was built from
    (``source_onnx``), or with ``prefer_fp32`` the exported FP32 ``{name}.onnx`` first."""
    if override:
        path = Path(override)
        if not path.is_file():
            raise InputError(f"{path} does not exist")
        return path
    comp = manifest["components"][name]
    candidates = [f"{name}.onnx"] if prefer_fp32 else []
    candidates += [comp["file"]] if comp["file"].endswith(".onnx") else []
    candidates += [comp[k] for k in ("source_onnx", "onnx", "source") if isinstance(comp.get(k), str)]
    candidates.append(f"{name}.onnx")
    for cand in candidates:
        if cand.endswith(".onnx") and (engines_dir / cand).is_file():
            return engines_dir / cand
    return None


def engine_max_batch(manifest: Manifest | dict[str, Any], name: str) -> int | None:
    """The largest batch a TensorRT component's optimization profile accepts, if recorded
    (:meth:`gcf_trt.manifest.Manifest.max_batch`, the one parser of the profile)."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(manifest)
    return manifest.max_batch(name)


def _tensor(name: str, dtype: str, dims: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "data_type": dtype, "dims": [int(d) for d in dims], **extra}


def _component_io(comp: dict[str, Any], onnx_path: Path | None, kind: str) -> list[dict[str, Any]]:
    """Config tensors for a component from the manifest shapes (batch dim dropped), dtypes from ONNX."""
    io = _io(onnx.load(str(onnx_path), load_external_data=False).graph) if onnx_path else {}
    tensors = []
    for tname, shape in comp[kind].items():
        if shape[0] != -1:
            raise EngineError(f"{tname} has a fixed batch dimension {shape[0]}; Triton batching needs it dynamic")
        dtype = triton_dtype(io[tname][0]) if tname in io else "TYPE_FP32"
        if tname in io and io[tname][1][1:] != list(shape[1:]):
            raise EngineError(f"manifest shape of {tname} {shape} does not match its ONNX graph {io[tname][1]}")
        tensors.append(_tensor(tname, dtype, shape[1:]))
    return tensors


def _parameters(params: dict[str, str]) -> dict[str, Any]:
    return {k: {"string_value": v} for k, v in params.items()}


def export_triton(engines_dir: str | os.PathLike, out_repo: str | os.PathLike, *, name: str = "gcf",
                  max_batch: int = 8, preferred_batch_sizes: list[int] | None = None,
                  max_queue_delay_us: int = 2000, backbone_instances: int = 1,
                  cpu_backend: str = "onnxruntime", cpu_threads: int | None = None,
                  stateful: bool = True, max_cameras: int = 64, sequence_idle_s: float = 60.0,
                  head_onnx: str | os.PathLike | None = None, verify: bool = True) -> TritonExport:
    """Write a Triton model repository for the engines in ``engines_dir`` (atomically).

    Args:
        engines_dir: a ``gcf-trt build`` output (its files are checked against the manifest).
        out_repo: the repository directory to (re)create.
        name: model name prefix (``{name}_backbone``, ``{name}_head``, ``{name}_ring_head``, ``{name}_stream``).
        max_batch: ``max_batch_size`` of every model (clamped to a TensorRT engine's profile).
        preferred_batch_sizes: dynamic-batcher preferred sizes (default: powers of two up to max_batch).
        max_queue_delay_us: how long the batchers wait to fill a batch.
        backbone_instances: ``instance_group`` count of the backbone (per GPU for TensorRT).
        cpu_backend: ``onnxruntime`` or ``openvino`` for a CPU backbone.
        cpu_threads: intra-op threads per CPU instance (``None``: the backend's default).
        stateful: also write the sequence-batched ring head and the ``{name}_stream`` ensemble.
        max_cameras: sequences (cameras) one ring-head instance holds at once; more wait in backlog.
        sequence_idle_s: a camera silent this long loses its ring (Triton frees the sequence slot).
        head_onnx: the head's ONNX graph when the engines hold only a TensorRT plan of it.
        verify: check the ring head numerically against the head with ONNX Runtime.
    """
    engines_dir = Path(engines_dir)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise InputError(f"model name prefix {name!r} must be letters, digits, '_', '-' or '.'",
                         hint="Triton model names are directory names; e.g. --name gcf")
    if cpu_backend not in CPU_BACKENDS:
        raise InputError(f"cpu_backend must be one of {CPU_BACKENDS}, got {cpu_backend!r}")
    if max_batch < 1 or backbone_instances < 1 or max_cameras < 1:
        raise InputError("max_batch, backbone_instances and max_cameras must be >= 1")
    load_model_config_pb2()  # the schema the configs are written through: missing -> fail before any work
    manifest = read_manifest(engines_dir)
    spec = manifest.spec
    comps = manifest["components"]
    verify_files(engines_dir, manifest, [comps[c]["file"] for c in ("backbone", "head")])
    summary: list[str] = []

    for cname in ("backbone", "head"):
        limit = engine_max_batch(manifest, cname) if comps[cname]["runtime"] == "tensorrt" else None
        if limit is not None and limit < max_batch:
            summary.append(f"max_batch {max_batch} -> {limit}: the {cname} TensorRT profile stops there")
            max_batch = limit
    preferred = sorted({b for b in (preferred_batch_sizes or [2 ** i for i in range(0, 8)]) if 1 <= b <= max_batch})
    if not preferred_batch_sizes:
        preferred = [b for b in preferred if b > 1] or [max_batch]
    names = {"backbone": f"{name}_backbone", "head": f"{name}_head", "ring_head": f"{name}_ring_head",
             "stream": f"{name}_stream"}
    labels = "\n".join(spec.labels) + "\n"
    models: dict[str, str] = {}
    ring_check = None

    def platform_fields(cname: str) -> tuple[dict[str, Any], str, str]:
        comp = comps[cname]
        if comp["runtime"] == "tensorrt":
            return {"platform": "tensorrt_plan"}, "model.plan", "KIND_GPU"
        if not comp["file"].endswith(".onnx"):
            raise EngineError(f"{comp['file']} ({comp['runtime']}) is neither an ONNX graph nor a TensorRT plan",
                              hint="rebuild the engines; Triton serves ONNX and TensorRT plans")
        if cname == "backbone" and cpu_backend == "openvino":
            return ({"backend": "openvino", "default_model_filename": "model.onnx"}, "model.onnx", "KIND_CPU")
        return {"platform": "onnxruntime_onnx"}, "model.onnx", "KIND_CPU"

    def cpu_params(cname: str, fields: dict[str, Any], kind: str) -> dict[str, Any] | None:
        params: dict[str, str] = {}
        if fields.get("backend") == "openvino":
            if cpu_threads:
                params.update(INFERENCE_NUM_THREADS=str(cpu_threads), NUM_STREAMS="1")
            # gcf-trt's selection ran this backbone in BF16 on OpenVINO: ask Triton's OpenVINO
            # backend for the same (on ONNX Runtime the FP32 graph simply runs in FP32).
            if str(comps[cname].get("precision", "")).lower() == "bf16":
                params["HINT_BF16"] = "YES"
        elif kind == "KIND_CPU" and cpu_threads:
            params.update(intra_op_thread_count=str(cpu_threads), inter_op_thread_count="1")
        return _parameters(params) if params else None

    with atomic_output_dir(out_repo) as tmp:
        for cname, role in (("backbone", "backbone: clip -> descriptor, dynamic batching"),
                            ("head", "head: ring -> logits, gates (stateless)")):
            comp = comps[cname]
            fields, fname, kind = platform_fields(cname)
            src_onnx = _onnx_source(engines_dir, manifest, cname, head_onnx if cname == "head" else None)
            mdir = tmp / names[cname]
            (mdir / VERSION).mkdir(parents=True)
            shutil.copyfile(engines_dir / comp["file"], mdir / VERSION / fname)
            outputs = _component_io(comp, src_onnx, "outputs")
            if cname == "head":
                (mdir / "labels.txt").write_text(labels)
                for t in outputs:
                    if t["name"] == "logits":
                        t["label_filename"] = "labels.txt"
            config = {
                "name": names[cname], **fields, "max_batch_size": max_batch,
                "input": _component_io(comp, src_onnx, "inputs"),
                "output": outputs,
                # preserve_ordering: responses leave in request order, so a client that pipelines
                # several clips of one camera gets their descriptors back in stream order.
                "dynamic_batching": {"preferred_batch_size": preferred,
                                     "max_queue_delay_microseconds": int(max_queue_delay_us),
                                     "preserve_ordering": True},
                "instance_group": [{"count": backbone_instances if cname == "backbone" else 1, "kind": kind}],
                "parameters": cpu_params(cname, fields, kind),
            }
            (mdir / CONFIG_NAME).write_text(to_pbtxt(config) + "\n")
            models[names[cname]] = role
            summary.append(f"{names[cname]}: {fields.get('platform') or fields.get('backend')} "
                           f"({comp['runtime']}, {comp.get('precision', '?')})")

        if stateful:
            # The ring head runs on ONNX Runtime on the CPU: the exported FP32 head is its source
            # (a TensorRT build keeps it beside the plans), else the head's own ONNX.
            src = _onnx_source(engines_dir, manifest, "head", head_onnx, prefer_fp32=True)
            if src is None:
                raise EngineError(f"{engines_dir} holds no ONNX graph of the head, needed for the ring head",
                                  hint="pass --head-onnx HEAD.onnx (the head.onnx the plan was built from), "
                                       "or --no-stateful")
            head_model = onnx.load(str(src))
            ring_model = build_ring_head(head_model, spec.ring_size, spec.dim)
            if verify:
                ring_check = check_ring_head(ring_model, head_model, spec.ring_size, spec.dim)
                if not ring_check <= RING_CHECK_ATOL:
                    raise EngineError(f"ring head differs from the head by {ring_check:.2e} (> {RING_CHECK_ATOL})",
                                      hint="report this as a bug with the engines' manifest")
            mdir = tmp / names["ring_head"]
            (mdir / VERSION).mkdir(parents=True)
            onnx.save_model(ring_model, str(mdir / VERSION / "model.onnx"), save_as_external_data=False)
            (mdir / "labels.txt").write_text(labels)
            rio = _io(ring_model.graph)
            dt = {k: triton_dtype(v[0]) for k, v in rio.items()}
            n, d, c = spec.ring_size, spec.dim, spec.num_classes
            config = {
                "name": names["ring_head"], "platform": "onnxruntime_onnx", "max_batch_size": max_batch,
                "input": [_tensor("descriptor", dt["descriptor"], [d])],
                "output": [_tensor("logits", dt["logits"], [c], label_filename="labels.txt"),
                           _tensor("gates", dt["gates"], [n])],
                "sequence_batching": {
                    "max_sequence_idle_microseconds": int(sequence_idle_s * 1e6),
                    "oldest": {"max_candidate_sequences": max_cameras, "preferred_batch_size": preferred,
                               "max_queue_delay_microseconds": int(max_queue_delay_us)},
                    "state": [
                        {"input_name": "ring_in", "output_name": "ring_out", "data_type": dt["ring_in"],
                         "dims": [n, d], "initial_state": [{"data_type": dt["ring_in"], "dims": [n, d],
                                                            "zero_data": True, "name": "empty_ring"}]},
                        {"input_name": "mask_in", "output_name": "mask_out", "data_type": dt["mask_in"],
                         "dims": [n], "initial_state": [{"data_type": dt["mask_in"], "dims": [n],
                                                         "zero_data": True, "name": "empty_mask"}]},
                    ],
                },
                "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
                "parameters": _parameters({"intra_op_thread_count": "1", "inter_op_thread_count": "1"}),
            }
            (mdir / CONFIG_NAME).write_text(to_pbtxt(config) + "\n")
            models[names["ring_head"]] = "ring head: descriptor -> logits, gates; ring kept per sequence (implicit state)"

            backbone_cfg_in = _component_io(comps["backbone"], _onnx_source(engines_dir, manifest, "backbone", None), "inputs")
            backbone_cfg_out = _component_io(comps["backbone"], _onnx_source(engines_dir, manifest, "backbone", None), "outputs")
            (clip_t,), (desc_t,) = backbone_cfg_in, backbone_cfg_out
            sdir = tmp / names["stream"]
            (sdir / VERSION).mkdir(parents=True)  # an ensemble still needs a version directory
            config = {
                "name": names["stream"], "platform": "ensemble", "max_batch_size": max_batch,
                "input": [clip_t],
                "output": [_tensor("logits", dt["logits"], [c]), _tensor("gates", dt["gates"], [n])],
                "ensemble_scheduling": {"step": [
                    {"model_name": names["backbone"], "model_version": -1,
                     "input_map": {clip_t["name"]: clip_t["name"]},
                     "output_map": {desc_t["name"]: "clip_descriptor"}},
                    {"model_name": names["ring_head"], "model_version": -1,
                     "input_map": {"descriptor": "clip_descriptor"},
                     "output_map": {"logits": "logits", "gates": "gates"}},
                ]},
            }
            (sdir / CONFIG_NAME).write_text(to_pbtxt(config) + "\n")
            models[names["stream"]] = "ensemble: clip -> backbone -> ring head (send with sequence_id per camera)"
            summary.append(f"{names['ring_head']}: onnxruntime_onnx, sequence batching (oldest, "
                           f"{max_cameras} cameras/instance), ring check max |diff| "
                           f"{'not run' if ring_check is None else f'{ring_check:.1e}'}")
            summary.append(f"{names['stream']}: ensemble {names['backbone']} -> {names['ring_head']}")

            info = {
                "format": "gcf-trt-triton", "version": 1, "gcf_trt": __version__,
                "engines": str(engines_dir.absolute()), "model_hash": manifest.get("model_hash"),
                "engines_target": manifest.get("target"), "engines_versions": manifest.get("versions"),
                "spec": manifest["spec"], "models": models, "ring_check_max_abs_diff": ring_check,
                "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "files": {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
            }
            (sdir / "gcf_trt.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    out = Path(out_repo)
    summary.insert(0, f"wrote Triton model repository {out} ({len(models)} models, max_batch_size {max_batch})")
    return TritonExport(out, models, ring_check, summary)


# --- checking a repository against Triton's own schema ---------------------------------------------
def load_model_config_pb2():
    """Triton's ``model_config_pb2`` module, shipped by the ``tritonclient`` package.

    Loaded from its file so that ``tritonclient.grpc/__init__`` (which needs grpcio) is not
    imported: the schema only needs protobuf.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("export-triton writes its configs through Triton's model_config schema, "
                                 "which comes with tritonclient (not installed)",
                                 hint="pip install 'gcf-trt[triton]' (tritonclient + protobuf)")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise BackendUnavailable(f"{path} is missing from tritonclient", hint="pip install -U 'gcf-trt[triton]'")
    import sys
    name = "gcf_trt._triton_model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    mspec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def parse_config(path: str | os.PathLike):
    """Parse a ``config.pbtxt`` into Triton's ``inference.ModelConfig`` (raises on any error)."""
    from google.protobuf import text_format
    pb2 = load_model_config_pb2()
    return text_format.Parse(Path(path).read_text(), pb2.ModelConfig())


def validate_repository(repo: str | os.PathLike) -> dict[str, Any]:
    """Parse every model's config with Triton's schema and check names, files and ensemble wiring.

    Returns ``{model name: ModelConfig}``.  Raises EngineError on a problem Triton would refuse.
    """
    repo = Path(repo)
    configs: dict[str, Any] = {}
    for mdir in sorted(p for p in repo.iterdir() if p.is_dir()):
        path = mdir / CONFIG_NAME
        if not path.is_file():
            raise EngineError(f"{mdir} has no {CONFIG_NAME}")
        try:
            cfg = parse_config(path)
        except Exception as exc:  # text_format.ParseError and friends
            raise EngineError(f"{path} is not a valid Triton model config: {exc}") from exc
        if cfg.name != mdir.name:
            raise EngineError(f"{path}: name {cfg.name!r} differs from its directory {mdir.name!r}")
        if not (mdir / VERSION).is_dir():
            raise EngineError(f"{mdir} has no version directory {VERSION}/")
        if cfg.platform != "ensemble":
            fname = cfg.default_model_filename or {"tensorrt_plan": "model.plan"}.get(cfg.platform, "model.onnx")
            if not (mdir / VERSION / fname).is_file():
                raise EngineError(f"{mdir / VERSION / fname} is missing")
        for out in cfg.output:
            if out.label_filename and not (mdir / out.label_filename).is_file():
                raise EngineError(f"{mdir / out.label_filename} is missing")
        configs[cfg.name] = cfg
    for cfg in configs.values():
        if cfg.platform != "ensemble":
            continue
        known = {t.name for t in cfg.input}
        for step in cfg.ensemble_scheduling.step:
            if step.model_name not in configs:
                raise EngineError(f"ensemble {cfg.name} calls unknown model {step.model_name}")
            target = configs[step.model_name]
            if set(step.input_map) != {t.name for t in target.input}:
                raise EngineError(f"ensemble {cfg.name}: step {step.model_name} maps inputs {sorted(step.input_map)}, "
                                  f"model has {sorted(t.name for t in target.input)}")
            missing = [v for v in step.input_map.values() if v not in known]
            if missing:
                raise EngineError(f"ensemble {cfg.name}: {missing} used before being produced")
            if not set(step.output_map) <= {t.name for t in target.output}:
                raise EngineError(f"ensemble {cfg.name}: step {step.model_name} maps unknown outputs")
            if target.max_batch_size < cfg.max_batch_size:
                raise EngineError(f"ensemble {cfg.name} max_batch_size {cfg.max_batch_size} exceeds "
                                  f"{target.name}'s {target.max_batch_size}")
            known |= set(step.output_map.values())
        if not {t.name for t in cfg.output} <= known:
            raise EngineError(f"ensemble {cfg.name}: outputs not produced by any step")
    return configs
