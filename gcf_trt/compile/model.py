"""GCF-Net in PyTorch: a clip backbone, a clip classifier (for the baselines) and the gated
clip fusion head.  The head's equations are ours (the paper does not publish them); they are
written out in the README ("The model") and in :class:`GCFHead`.

Shapes: a clip is ``[B, 3, T, H, W]``; a video is ``[B, K, 3, T, H, W]`` (K clips) with a mask
``[B, K]`` (1 = real clip, 0 = empty ring slot).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError, CheckpointError, GcfError
from ..fsutil import atomic_file
from ..spec import ModelSpec

CHECKPOINT_FORMAT = "gcf-trt-checkpoint"
CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------- backbones
class Conv2Plus1D(nn.Sequential):
    """A (2+1)D unit: spatial (1,k,k) conv, BN, ReLU, temporal (3,1,1) conv, BN.

    Factorising the 3D kernel keeps FLOPs low, exports to plain ONNX Conv and quantizes well
    (every conv has many input channels except the stem).
    """

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)):
        st, ss = stride[0], stride[1]
        super().__init__(
            nn.Conv3d(cin, cout, (1, 3, 3), (1, ss, ss), (0, 1, 1), bias=False),
            nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, (3, 1, 1), (st, 1, 1), (1, 0, 0), bias=False),
            nn.BatchNorm3d(cout),
        )


class Block2Plus1D(nn.Module):
    """Residual (2+1)D block with a 1x1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.body = Conv2Plus1D(cin, cout, stride)
        self.shortcut = (nn.Identity() if cin == cout and stride == (1, 1, 1) else
                         nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Edge3D(nn.Module):
    """Our edge backbone: a (2+1)D residual 3D-CNN, 1.8 GFLOPs (0.9 GMAC) per 16x112x112 clip at width 32.

    Args:
        width: channels of the first stage; stages use width x (1, 2, 4, 8); D = 8 * width.
        blocks: residual blocks per stage.
    """

    def __init__(self, width: int = 32, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        w = int(width)
        self.stem = nn.Sequential(
            nn.Conv3d(3, w, (1, 5, 5), (1, 2, 2), (0, 2, 2), bias=False),
            nn.BatchNorm3d(w), nn.ReLU(inplace=True),
            nn.Conv3d(w, w, (3, 1, 1), 1, (1, 0, 0), bias=False),
            nn.BatchNorm3d(w), nn.ReLU(inplace=True),
        )
        layers, cin = [], w
        strides = [(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
        for i, (n, stride) in enumerate(zip(blocks, strides)):
            cout = w * 2 ** i
            for j in range(n):
                layers.append(Block2Plus1D(cin, cout, stride if j == 0 else (1, 1, 1)))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dim = cin

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(clip))).flatten(1)


TORCHVISION_MISSING = "not installed"
TORCHVISION_FIX = ("install the pair that imports together: pip install 'gcf-trt[torchvision]' "
                   "(torch 2.14.1 + torchvision 0.29.1), or pip uninstall torchvision to use edge3d only")


def torchvision_status() -> str | None:
    """None when ``torchvision.models.video`` imports, else why not.

    ``"not installed"``, or the import's own error when torchvision is installed but broken:
    a torchvision built for another torch fails with ``RuntimeError: operator torchvision::nms
    does not exist`` (not an ImportError), so every exception counts here.
    """
    import importlib.util
    try:
        if importlib.util.find_spec("torchvision") is None:
            return TORCHVISION_MISSING
        from torchvision.models import video  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure to import is the same fault for the user
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return None


def _broken_torchvision(status: str) -> BackboneError:
    return BackboneError(f"torchvision is installed but does not import ({status})", hint=TORCHVISION_FIX)


def _import_torchvision_video(name: str):
    status = torchvision_status()
    if status == TORCHVISION_MISSING:
        raise BackboneError(f"backbone {name!r} needs torchvision, which is not installed",
                            hint="pip install 'gcf-trt[torchvision]', or use --backbone edge3d")
    if status is not None:
        raise _broken_torchvision(status)
    from torchvision.models import video as tvv
    return tvv


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """A state dict from a file with ``torch.load(weights_only=True)`` (no code runs).

    Accepts a plain state dict or one nested under ``"state_dict"`` / ``"model"`` (common in
    training checkpoints); a ``"module."`` prefix (DataParallel) is removed.

    Raises:
        CheckpointError: missing, unreadable, a pickle naming code, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file {path} does not exist", hint="check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every load failure is "this is not a weights file"
        raise CheckpointError(f"{what} file {path} cannot be read as torch weights "
                              f"({type(exc).__name__}: {_first_line(exc)})",
                              hint="pass a state dict saved with torch.save(model.state_dict(), FILE)") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{what} file {path} is not a state dict (name -> tensor)",
                              hint="pass a state dict saved with torch.save(model.state_dict(), FILE)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_backbone_weights(net: nn.Module, path: str | os.PathLike, name: str,
                          ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict file into ``net``; keys under ``ignore_prefixes`` (the dataset's own
    classifier, e.g. Kinetics-400's ``fc``) are dropped.

    Raises:
        CheckpointError: keys missing / unexpected or shapes different, naming the first few.
    """
    state = {k: v for k, v in read_state_dict(path, f"backbone weights ({name})").items()
             if not k.startswith(ignore_prefixes)}
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(ignore_prefixes)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (first: {'; '.join(shapes[:3])}; file vs {name})")
        raise CheckpointError(f"{path} does not fit backbone {name!r}: " + ", ".join(parts),
                              hint=f"pass a state dict of torchvision's {name} (or the backbone you trained), "
                                   f"or choose the --backbone it was saved from")
    net.load_state_dict(state, strict=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def _torchvision_video(name: str, weights_path: str | None = None) -> nn.Module:
    """torchvision r3d_18 / mc3_18 / r2plus1d_18 / s3d without their classifier.

    Weights come only from the user's file (``weights_path``, a torchvision state dict);
    nothing is downloaded.
    """
    tvv = _import_torchvision_video(name)
    net = getattr(tvv, name)(weights=None)
    if weights_path:
        load_backbone_weights(net, weights_path, name, ignore_prefixes=("fc.", "classifier."))
    if name == "s3d":
        # s3d's final AvgPool3d is sized for 224x224 inputs; adaptive pooling accepts any size.
        dim = net.classifier[1].in_channels
        net.avgpool = nn.AdaptiveAvgPool3d(1)
        net.classifier = nn.Identity()
    else:
        dim = net.fc.in_features
        net.fc = nn.Identity()

    class _Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.dim = net, dim

        def forward(self, clip: torch.Tensor) -> torch.Tensor:
            return self.net(clip).flatten(1)

    return _Flat()


def load_pretrained_backbone(backbone: nn.Module, name: str, path: str | os.PathLike) -> None:
    """Load a user's state dict file into a built backbone (``gcf-trt train --backbone-weights``).

    torchvision backbones take torchvision's own state dicts (e.g. Kinetics-400 weights; the
    400-class ``fc`` / ``classifier`` is dropped); ``edge3d`` takes ``backbone.state_dict()``.
    """
    target = getattr(backbone, "net", backbone)
    ignore = ("fc.", "classifier.") if target is not backbone else ()
    load_backbone_weights(target, path, name, ignore_prefixes=ignore)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "edge3d": lambda width=32, blocks=(2, 2, 2, 2): Edge3D(width, tuple(blocks)),
    **{name: (lambda name=name, **kw: _torchvision_video(name, **kw))
       for name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d")},
}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Instantiate a registered backbone; it has a ``dim`` attribute (descriptor size D)."""
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    try:
        return BACKBONES[name](**kwargs)
    except TypeError as exc:
        raise BackboneError(f"bad arguments for backbone {name!r}: {exc}",
                            hint="check backbone_args in the spec") from exc


def available_backbones() -> dict[str, bool]:
    """Registry names and whether each can be built here (torchvision ones need torchvision).

    Raises:
        BackboneError: torchvision is installed but does not import (a torch / torchvision
            version mismatch); listing it as merely "missing" would hide the fix.
    """
    status = torchvision_status()
    if status is not None and status != TORCHVISION_MISSING:
        raise _broken_torchvision(status)
    return {name: name == "edge3d" or status is None for name in sorted(BACKBONES)}


# ----------------------------------------------------------------------------- head
def _shift(z: torch.Tensor, offset: int) -> torch.Tensor:
    """``out[:, i] = z[:, i - offset]`` along the clip axis (dim 1), zero where out of range.

    Positive ``offset`` looks into the past (clip i - offset), negative into the future.
    Written as Slice + Concat with zeros rather than ``F.pad``: the exporter's Pad needs opset
    18, and TensorRT 8.6 (JetPack 5/6.0) parses opset <= 17.
    """
    n = z.shape[1]
    k = abs(offset)
    if k >= n:
        return torch.zeros_like(z)
    zeros = torch.zeros_like(z[:, :k])
    if offset > 0:
        return torch.cat([zeros, z[:, : n - k]], dim=1)
    return torch.cat([z[:, k:], zeros], dim=1)


class GCFHead(nn.Module):
    r"""Gated clip fusion over N clip descriptors.

    With descriptors :math:`x_i \in R^D`, mask :math:`m_i \in \{0,1\}`, offsets
    :math:`O = \{0, -1, +1, -d, +d\}`:

    1. projection: :math:`h_i = m_i \, \mathrm{ReLU}(W_p x_i + b_p)`  (E dims)
    2. bi-directional inter-clip fusion, short (±1) and long (±d) range, residual:
       :math:`f_i = m_i \,[h_i + \mathrm{ReLU}(\sum_{o \in O} W_o h_{i+o} + b_f)]`, with
       :math:`h_j = 0` outside the sequence (past: -1, -d; future: +1, +d)
    3. gated clip-wise attention: :math:`g_i = m_i \, \sigma(w_g^\top \mathrm{ReLU}(W_a f_i + b_a) + b_g)`
    4. clip selection: keep clip i when :math:`g_i \ge r \max_j g_j` (r = ``select_ratio``),
       :math:`a_i = g_i [\text{kept}]`, video descriptor :math:`v = \sum a_i f_i / (\sum a_i + \epsilon)`
    5. classifier: :math:`\text{logits} = W_c v + b_c`

    Empty slots (``m_i = 0``) behave exactly like the zero padding at the sequence ends, so
    the result for k valid clips does not depend on how many empty slots precede them.
    """

    OFFSETS_NAMES = ("self", "past1", "future1", "past_d", "future_d")

    def __init__(self, dim: int, hidden: int, num_classes: int, long_range: int = 2,
                 select_ratio: float = 0.5):
        super().__init__()
        self.long_range = int(long_range)
        self.select_ratio = float(select_ratio)
        self.hidden = int(hidden)
        self.proj = nn.Linear(dim, hidden)
        # The five W_o stacked into one matmul: cheap, and each clip's five projections can be
        # cached by a streaming runtime (see docs/DESIGN.md).
        self.fuse = nn.Linear(hidden, 5 * hidden, bias=False)
        self.fuse_bias = nn.Parameter(torch.zeros(hidden))
        self.gate = nn.Sequential(nn.Linear(hidden, max(8, hidden // 2)), nn.ReLU(),
                                  nn.Linear(max(8, hidden // 2), 1))
        self.classifier = nn.Linear(hidden, num_classes)

    @property
    def offsets(self) -> tuple[int, ...]:
        d = self.long_range
        return (0, 1, -1, d, -d)  # shift amounts: h_{i-shift}; 1 = past neighbour

    def fused(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: fused per-clip features ``[B, N, E]``."""
        m = mask.unsqueeze(-1)
        h = F.relu(self.proj(x)) * m
        z = self.fuse(h).unflatten(-1, (5, self.hidden))  # [B, N, 5, E]
        mixed = self.fuse_bias + sum(_shift(z[:, :, k], s) for k, s in enumerate(self.offsets))
        return (h + F.relu(mixed)) * m

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B,N,D]``, ``mask [B,N]`` (float, 1 = valid) -> ``logits [B,C]``, ``gates [B,N]``."""
        mask = mask.to(x.dtype)
        f = self.fused(x, mask)
        gates = torch.sigmoid(self.gate(f).squeeze(-1)) * mask
        top = gates.amax(dim=1, keepdim=True)
        keep = (gates >= self.select_ratio * top).to(x.dtype) * mask
        weights = gates * keep
        video = (weights.unsqueeze(-1) * f).sum(1) / (weights.sum(1, keepdim=True) + 1e-6)
        return self.classifier(video), gates


# ----------------------------------------------------------------------------- GCF-Net
class GCFNet(nn.Module):
    """Backbone + clip classifier (for the baselines) + gated clip fusion head."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone = build_backbone(spec.backbone, **spec.backbone_args)
        if self.backbone.dim != spec.dim:
            raise CheckpointError(
                f"spec.dim={spec.dim} but backbone {spec.backbone!r} produces {self.backbone.dim}",
                hint=f"set dim to {self.backbone.dim} in the spec")
        self.clip_classifier = nn.Linear(spec.dim, spec.num_classes)
        self.head = GCFHead(spec.dim, spec.head_hidden, spec.num_classes, spec.long_range,
                            spec.select_ratio)

    @classmethod
    def from_spec_args(cls, **spec_kwargs) -> "GCFNet":
        """Build a model whose ``dim`` is taken from the backbone (convenient for new models)."""
        spec = ModelSpec(**spec_kwargs)
        probe = build_backbone(spec.backbone, **spec.backbone_args)
        spec.dim = probe.dim
        return cls(spec)

    def descriptors(self, clips: torch.Tensor) -> torch.Tensor:
        """``[B, K, 3, T, H, W]`` -> ``[B, K, D]`` (one backbone call per clip, batched)."""
        b, k = clips.shape[:2]
        return self.backbone(clips.flatten(0, 1)).unflatten(0, (b, k))

    def forward(self, clips: torch.Tensor, mask: torch.Tensor | None = None):
        """GCF prediction for a video of K clips: ``logits [B,C]``, ``gates [B,K]``."""
        desc = self.descriptors(clips)
        if mask is None:
            mask = torch.ones(desc.shape[:2], dtype=desc.dtype)
        return self.head(desc, mask)

    # Baselines on the same backbone (the paper's comparison) -------------------------
    def clip_logits(self, desc: torch.Tensor) -> torch.Tensor:
        return self.clip_classifier(desc)

    def central_clip_logits(self, desc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits of the central valid clip of each video."""
        mask = mask.to(desc.dtype)
        n_valid = mask.sum(1).long()
        first = (mask.argmax(1)).long()  # masks are left-padded: first valid slot
        centre = first + (n_valid - 1).clamp(min=0) // 2
        picked = desc[torch.arange(desc.shape[0]), centre]
        return self.clip_classifier(picked)

    def average_logits(self, desc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of the clip logits over the valid clips."""
        mask = mask.to(desc.dtype).unsqueeze(-1)
        logits = self.clip_classifier(desc) * mask
        return logits.sum(1) / mask.sum(1).clamp(min=1)


# ----------------------------------------------------------------------------- checkpoints
def model_hash(model: GCFNet) -> str:
    """sha256 of the spec and every weight, independent of file layout (first 16 hex digits)."""
    digest = hashlib.sha256(model.spec.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(model: GCFNet, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write weights + spec to one file, atomically (temp file then rename)."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "spec": model.spec.to_dict(), "state_dict": model.state_dict(),
               "extra": extra or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    # fsynced temp file + rename: a crash or Ctrl-C mid-write leaves the previous checkpoint
    # (training saves one every epoch and --resume relies on it).
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> GCFNet:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Raises:
        CheckpointError: missing, empty, unreadable, a pickle with code, or not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses GLOBAL opcodes (how a pickle names code to call) with
        # "Unsupported global"; anything else is a corrupt or foreign file, not a hostile one.
        if "unsupported global" not in str(exc).lower():
            raise CheckpointError(f"checkpoint {path} cannot be read: not a torch checkpoint "
                                  f"({str(exc).splitlines()[0]})") from exc
        raise CheckpointError(
            f"checkpoint {path} was refused: it contains Python objects beyond plain weights "
            f"(it could run code when loaded) and was not executed",
            hint="re-save it with gcf_trt.compile.model.save_checkpoint from a trusted source") from exc
    except Exception as exc:  # noqa: BLE001
        # A text file or a foreign format fails deep in the unpickler with anything from
        # KeyError (an opcode byte read as a memo index) to RuntimeError / EOFError: all of
        # them mean "not a torch checkpoint", never a traceback for the user.
        raise CheckpointError(f"checkpoint {path} cannot be read: not a torch checkpoint "
                              f"({type(exc).__name__}: {_first_line(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gcf-trt checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, "
                              f"this gcf-trt reads version {CHECKPOINT_VERSION}",
                              hint="upgrade gcf-trt or re-save the checkpoint")
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except (KeyError, TypeError, GcfError) as exc:
        raise CheckpointError(f"{path}: its model spec is missing or invalid ({_first_line(exc)})") from exc
    model = GCFNet(spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not match the spec: {_first_line(exc)}") from exc
    return model.eval()


def checkpoint_bytes(model: GCFNet) -> bytes:
    """The checkpoint as bytes (for hashing or shipping)."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "spec": model.spec.to_dict(), "state_dict": model.state_dict(), "extra": {}}, buf)
    return buf.getvalue()
