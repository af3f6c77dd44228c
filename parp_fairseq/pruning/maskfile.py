"""The mask file: a ``torch.save``-d dict, loadable with ``weights_only=True``.

Keys::

    format          "parp_fairseq.mask"
    version         1
    masks           {name: torch.bool tensor}, True = kept; names are relative to the
                    wav2vec 2.0 model, e.g. "encoder.layers.0.fc1.weight"
    shapes          {name: [dims]}
    sparsity        target sparsity (fraction removed)
    actual_sparsity {"global": s, "layers.0": s0, ...}
    method          "omp" | "mpi" | "random" | "imp" | "parp" | ...
    ranking         "global" | "layer" | "tensor"
    source          where the weights came from (checkpoint path)
    meta            free-form dict (language, seed, round, ...)
    granularity     "weight" (unstructured) | "neuron" | "head" | "neuron+head"; absent = "weight"
    num_heads       attention heads per layer (structured files)
    group_norm      "l1" | "l2": how groups were ranked (structured files)
    family          the pretrained model family the masks were computed on ("wav2vec2",
                    "data2vec_audio", ...); "" when unknown (files of older versions)

Files are written atomically (temporary file, then rename): a crash leaves nothing half-written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping

import torch

from ..errors import CheckpointError, MissingFileError
from ..fsutil import atomic_torch_save
from .magnitude import Masks
from .stats import sparsity_report

MASK_FORMAT = "parp_fairseq.mask"
MASK_VERSION = 1

# prefixes under which the wav2vec 2.0 model lives in fairseq checkpoints
_PREFIXES = ("w2v_encoder.w2v_model.", "encoder.w2v_model.", "w2v_model.")


def canonical_name(key: str) -> str:
    """``"w2v_encoder.w2v_model.encoder.layers.0.fc1.weight" -> "encoder.layers.0.fc1.weight"``."""
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


@dataclass
class MaskFile:
    masks: Masks
    sparsity: float
    method: str
    ranking: str
    source: str = ""
    meta: Dict[str, Any] = field(default_factory=dict)
    granularity: str = "weight"
    num_heads: int = 0
    group_norm: str = "l1"
    family: str = ""

    @property
    def shapes(self) -> Dict[str, list]:
        return {n: list(m.shape) for n, m in self.masks.items()}

    def report(self) -> Dict[str, float]:
        return sparsity_report(self.masks)


def save_mask_file(path: str | os.PathLike, mf: MaskFile) -> None:
    payload = {
        "format": MASK_FORMAT,
        "version": MASK_VERSION,
        "masks": {n: m.detach().to("cpu", torch.bool).contiguous() for n, m in mf.masks.items()},
        "shapes": mf.shapes,
        "sparsity": float(mf.sparsity),
        "actual_sparsity": mf.report(),
        "method": mf.method,
        "ranking": mf.ranking,
        "source": str(mf.source),
        "meta": dict(mf.meta),
        "granularity": mf.granularity,
        "num_heads": int(mf.num_heads),
        "group_norm": mf.group_norm,
        "family": mf.family,
    }
    atomic_torch_save(payload, path)


def load_mask_file(path: str | os.PathLike) -> MaskFile:
    from ..safe_load import torch_load

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(
            f"mask file {path!r} does not exist; compute one with "
            f"`parp-fairseq-mask omp|mpi|random ... --out {path}`"
        )
    obj = torch_load(path, what="mask file")  # weights_only: a mask file holds tensors and plain data
    if not isinstance(obj, dict) or obj.get("format") != MASK_FORMAT:
        hint = " (it looks like a fairseq checkpoint)" if isinstance(obj, dict) and "model" in obj else ""
        raise CheckpointError(
            f"{path!r} is not a parp_fairseq mask file{hint}; compute one with "
            f"`parp-fairseq-mask omp|mpi|random --checkpoint CKPT --sparsity S --out mask.pt`"
        )
    if obj.get("version", 0) > MASK_VERSION:
        raise CheckpointError(f"{path!r} has mask format version {obj['version']}; this parp_fairseq "
                              f"reads up to {MASK_VERSION}: upgrade parp_fairseq")
    masks = {n: m.to(torch.bool) for n, m in obj["masks"].items()}
    for n, m in masks.items():
        if list(m.shape) != list(obj["shapes"][n]):
            raise CheckpointError(f"{path!r} is corrupt: mask {n} has shape {list(m.shape)} but the "
                                  f"file records {obj['shapes'][n]}")
    mf = MaskFile(masks=masks, sparsity=float(obj["sparsity"]), method=obj["method"],
                  ranking=obj["ranking"], source=obj.get("source", ""), meta=obj.get("meta", {}),
                  granularity=str(obj.get("granularity", "weight")), num_heads=int(obj.get("num_heads", 0)),
                  group_norm=str(obj.get("group_norm", "l1")), family=str(obj.get("family", "")))
    if mf.granularity != "weight":
        from .structured import Granularity

        try:
            Granularity(mf.granularity, mf.num_heads, mf.group_norm).check_masks(masks)
        except ValueError as e:
            raise CheckpointError(f"{path!r} is corrupt: it records granularity={mf.granularity} but {e}") from None
    return mf


def check_compatible(masks: Mapping[str, torch.Tensor], shapes: Mapping[str, Any],
                     what: str = "mask", target: str = "model") -> None:
    """Raise one ValueError naming every mismatch between mask names/shapes and a model's."""
    missing = [n for n in shapes if n not in masks]
    extra = [n for n in masks if n not in shapes]
    wrong = [(n, list(masks[n].shape), list(shapes[n])) for n in masks
             if n in shapes and list(masks[n].shape) != list(shapes[n])]
    if not (missing or extra or wrong):
        return
    lines = [f"{what} does not fit the {target} (was it computed for another architecture or "
             f"another target pattern?)"]
    if wrong:
        lines.append("  shape mismatches: " + "; ".join(
            f"{n}: {what} {a} vs {target} {b}" for n, a, b in wrong[:5])
            + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else ""))
    if missing:
        lines.append(f"  {len(missing)} {target} parameter(s) without a mask, e.g. {missing[:3]}")
    if extra:
        lines.append(f"  {len(extra)} mask(s) for parameters the {target} lacks, e.g. {extra[:3]}")
    lines.append("  Fix: recompute the mask from a checkpoint of this architecture with the same "
                 "`prune_pattern`.")
    raise ValueError("\n".join(lines))
