"""Reading fairseq checkpoints without building models: kinds, target weights, masks."""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence

import torch

from .pruning.maskfile import canonical_name

PRETRAINED = "pretrained"  # wav2vec2 / hubert / data2vec pretraining checkpoint
DENSE_CTC = "dense-ctc"  # wav2vec_ctc, or parp_wav2vec_ctc without masks
PRUNED_CTC = "pruned-ctc"  # parp_wav2vec_ctc with masks

_CTC_MODELS = ("wav2vec_ctc", "parp_wav2vec_ctc", "parp_wav2vec_ctc_sliced",
               "hubert_ctc", "parp_hubert_ctc", "parp_hubert_ctc_sliced")
EXPORTED_CTC = ("wav2vec_ctc", "hubert_ctc", "parp_wav2vec_ctc_sliced", "parp_hubert_ctc_sliced")


def load_checkpoint(path, arg_overrides: Optional[dict] = None) -> dict:
    """A fairseq checkpoint on CPU, read safely: ``fairseq.checkpoint_utils.load_checkpoint_to_cpu``
    as wrapped by the plugin (``weights_only`` torch load, config strings that fairseq ``eval()``-s
    checked as literals, one :class:`~parp_fairseq.errors.CheckpointError` for any bad file), and
    ``--compress`` exports decompressed."""
    import parp_fairseq  # noqa: F401  (installs the safe loader)
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(os.fspath(path), arg_overrides)  # missing file: MissingFileError
    if state.get(COMPRESSED) is not None:
        state["model"] = decompress_state_dict(state["model"])
        state.pop(COMPRESSED)
    return state


COMPRESSED = "parp_compressed"  # top-level key of a `parp-fairseq-export --compress` checkpoint


def compress_state_dict(sd: Dict[str, torch.Tensor], values_dtype: Optional[torch.dtype] = None) -> dict:
    """Store every floating tensor that gets smaller that way as a bitmask of its nonzeros (1 bit per
    entry, ``numpy.packbits``) plus the nonzero values (optionally cast to ``values_dtype``)."""
    import numpy as np

    out = {}
    for k, t in sd.items():
        if not torch.is_tensor(t) or not t.is_floating_point():
            out[k] = t
            continue
        v_dtype = values_dtype or t.dtype
        es = torch.empty((), dtype=v_dtype).element_size()
        nz = t != 0
        nnz = int(nz.sum())
        if (t.numel() + 7) // 8 + nnz * es >= t.numel() * es:
            out[k] = t.to(v_dtype)
            continue
        bits = torch.from_numpy(np.packbits(nz.reshape(-1).numpy()))
        out[k] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "bits": bits,
                  "values": t[nz].to(v_dtype)}
    return out


def decompress_state_dict(sd: dict) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`compress_state_dict` (values come back in the original dtype)."""
    import numpy as np

    out = {}
    for k, v in sd.items():
        if isinstance(v, dict) and "bits" in v:
            n = int(np.prod(v["shape"])) if v["shape"] else 1
            nz = torch.from_numpy(np.unpackbits(v["bits"].numpy(), count=n).astype(bool))
            dtype = getattr(torch, v["dtype"])
            t = torch.zeros(n, dtype=dtype)
            t[nz] = v["values"].to(dtype)
            out[k] = t.view(v["shape"])
        else:
            out[k] = v
    return out


def model_name(state: dict) -> Optional[str]:
    cfg = state.get("cfg") or {}
    model = cfg.get("model") if hasattr(cfg, "get") else None
    if model is not None and model.get("_name"):
        return model.get("_name")
    args = state.get("args")
    return getattr(args, "arch", None) if args is not None else None


def pruning_cfg(state: dict) -> Mapping:
    """``cfg.model.pruning`` of a checkpoint (empty for stock and pretrained checkpoints)."""
    cfg = state.get("cfg") or {}
    model = cfg.get("model") if hasattr(cfg, "get") else None
    return (model.get("pruning") if model is not None else None) or {}


def encoder_model_cfg(model_cfg) -> Mapping:
    """The pretrained encoder's model config inside a model config: ``w2v_args.model`` of a
    finetuned CTC model, the config itself for a pretrained one (``{}`` where neither says)."""
    if model_cfg is None:
        return {}
    w2v = model_cfg.get("w2v_args")
    if w2v is not None and hasattr(w2v, "get") and w2v.get("model") is not None:
        return w2v["model"]
    return {} if model_cfg.get("_name") in _CTC_MODELS else model_cfg


def _encoder_cfg(state: dict) -> Mapping:
    """:func:`encoder_model_cfg` of a checkpoint in the ``cfg`` or the older ``args`` layout (whose
    flat Namespace names the model ``arch``; returned with ``_name`` set to it)."""
    cfg = state.get("cfg") or {}
    if hasattr(cfg, "get") and cfg.get("model") is not None:
        return encoder_model_cfg(cfg["model"])
    args = state.get("args")
    if args is None:
        return {}
    w2v = getattr(args, "w2v_args", None)
    src = dict(vars(w2v if w2v is not None and hasattr(w2v, "__dict__") else args))
    src.setdefault("_name", src.get("arch"))
    return src


def encoder_arch(state: dict) -> Dict[str, int]:
    """``{"layers", "embed_dim", "ffn_dim", "heads"}`` of the wav2vec 2.0 encoder of a pretrained or
    finetuned checkpoint (``cfg`` or old ``args`` layout; fairseq's defaults where unset)."""
    get = _encoder_cfg(state).get
    return {"layers": int(get("encoder_layers", 12) or 12), "embed_dim": int(get("encoder_embed_dim", 768) or 768),
            "ffn_dim": int(get("encoder_ffn_embed_dim", 3072) or 3072),
            "heads": int(get("encoder_attention_heads", 12) or 12)}


def encoder_family(state: dict) -> str:
    """The pretrained model family (``wav2vec2``, ``data2vec_audio``, ``hubert`` ...) of a pretrained or
    finetuned checkpoint, as fairseq registered it; ``""`` when the checkpoint does not say."""
    return str(_encoder_cfg(state).get("_name") or "")


def checkpoint_kind(state: dict) -> str:
    name = model_name(state)
    if name in _CTC_MODELS:
        has_masks = any(k.endswith("_mask") for k in state["model"])
        return PRUNED_CTC if has_masks else DENSE_CTC
    return PRETRAINED


def target_weights(state_dict: Dict[str, torch.Tensor], module_pattern: str,
                   params: Sequence[str] = ("weight",)) -> "OrderedDict[str, torch.Tensor]":
    """Canonical name -> tensor of every ``<module>.<param>`` whose module fully matches the pattern."""
    rx = re.compile(module_pattern)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state_dict.items():
        if key.endswith("_mask"):
            continue
        cname = canonical_name(key)
        module, _, param = cname.rpartition(".")
        if param in params and rx.fullmatch(module):
            out[cname] = value
    if not out:
        raise ValueError(f"no parameter matches the prune pattern {module_pattern!r} (params "
                         f"{list(params)}); is this a wav2vec 2.0 checkpoint?")
    return out


def checkpoint_masks(state_dict: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Canonical weight name -> mask of a pruned checkpoint."""
    return OrderedDict((canonical_name(k[: -len("_mask")]), v.to(torch.bool))
                       for k, v in state_dict.items() if k.endswith("_mask"))


def is_pruning_key(key: str) -> bool:
    """State-dict keys parp_fairseq adds to the stock model's: ``<param>_mask`` / ``<param>_scores``."""
    return key.endswith(("_mask", "_scores"))


def effective_weights(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The stock-named weights a (possibly pruned) CTC state dict computes with: each masked
    tensor multiplied by its mask, mask and score entries dropped."""
    return {k: (v.masked_fill(~state_dict[k + "_mask"].to(torch.bool), 0) if k + "_mask" in state_dict else v)
            for k, v in state_dict.items() if not is_pruning_key(k)}

