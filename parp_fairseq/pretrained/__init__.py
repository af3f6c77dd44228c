"""The shipped default pretrained wav2vec 2.0 (model card: ``docs/pretrained_model.md``).

A small multilingual wav2vec 2.0 pretrained here with stock ``audio_pretraining``
(``configs/pretrain/shipped.yaml``) on the offline corpus. It is stored in the package as a fairseq
pretraining checkpoint with fp16 weights and no optimizer state (fairseq loads it into an fp32 model
through ``model.w2v_path``), and its sha256 is checked every time it is loaded:

    from parp_fairseq.pretrained import default_model_path
    fairseq-hydra-train ... model.w2v_path=$(parp-fairseq-pretrained path)

``parp-fairseq-pretrained pack CKPT OUT`` turns a pretraining checkpoint into such a file.
"""

import os
from pathlib import Path
from typing import Dict, Optional

from ..errors import CheckpointError
from ..fsutil import file_digest

HERE = Path(__file__).resolve().parent
REGISTRY = HERE / "shipped.json"
DEFAULT = "w2v2-mini-multi"
# the architecture fields recorded for a shipped model (and checked by the tests)
ARCH_KEYS = ("_name", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
             "conv_feature_layers", "final_dim", "layer_norm_first", "extractor_mode", "conv_pos", "conv_pos_groups")


def _registry() -> Dict[str, dict]:
    import json

    return json.loads(REGISTRY.read_text()) if REGISTRY.is_file() else {}


# name -> file, sha256, the architecture, parameters and updates recorded when it was packed
SHIPPED: Dict[str, dict] = _registry()

_verified: Dict[str, tuple] = {}


def sha256(path) -> str:
    return file_digest(path, "sha256")


def _fix(name: str) -> str:
    return (f"restore it with `git checkout -- {os.path.relpath(HERE / SHIPPED[name]['file'], HERE.parents[1])}` "
            f"(or reinstall parp_fairseq), or reproduce it with `python scripts/demo.py --pretrain`")


def verify(name: str = DEFAULT) -> Path:
    """Path of the shipped model ``name`` after checking its sha256; a
    :class:`~parp_fairseq.errors.CheckpointError` naming the fix when it is missing, corrupt or modified."""
    if name not in SHIPPED:
        raise CheckpointError(f"no shipped pretrained model {name!r}; shipped: {sorted(SHIPPED) or 'none'}")
    entry = SHIPPED[name]
    path = HERE / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"the shipped pretrained model {path} is missing; {_fix(name)}")
    st = path.stat()
    key = (st.st_size, st.st_mtime_ns)
    if _verified.get(str(path)) == key:
        return path
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"the shipped pretrained model {path} is corrupt or modified (sha256 {digest[:16]}..., expected "
            f"{entry['sha256'][:16]}...); {_fix(name)}")
    _verified[str(path)] = key
    return path


def default_model_path() -> Path:
    """The verified path of the default shipped model (what the demo finetunes)."""
    return verify(DEFAULT)


def shipped_name(path) -> Optional[str]:
    """The name of the shipped model stored at ``path`` (None for any other file)."""
    try:
        p = Path(os.fspath(path)).resolve()
    except (TypeError, OSError):
        return None
    for name, entry in SHIPPED.items():
        if p == HERE / entry["file"]:
            return name
    return None


def verify_if_shipped(path) -> None:
    """Called by the plugin's checkpoint loader: a shipped model is hash-checked before it is read."""
    name = shipped_name(path)
    if name is not None:
        verify(name)


def architecture(state: dict) -> Dict[str, object]:
    """The recorded architecture fields of a pretraining checkpoint's model config."""
    from ..checkpoints import encoder_model_cfg

    cfg = encoder_model_cfg(state["cfg"]["model"]) if state.get("cfg") is not None else {}
    return {k: cfg.get(k) for k in ARCH_KEYS if k in cfg}


def pack(src, out, fp16: bool = True) -> dict:
    """Write ``src`` (a fairseq pretraining checkpoint) as a shippable one at ``out``: the model's
    floating tensors in fp16 (``fp16``), the config, the update count; no optimizer state. Returns
    the registry entry (file name, sha256, architecture, parameters, updates, bytes)."""
    import torch

    from ..checkpoints import checkpoint_kind, load_checkpoint
    from ..fsutil import atomic_torch_save, same_file

    same_file(src, out, "checkpoint", "--out")
    state = load_checkpoint(src)
    if checkpoint_kind(state) != "pretrained":
        raise CheckpointError(f"{src} is a {checkpoint_kind(state)} checkpoint; pack a PRETRAINING checkpoint "
                              f"(stock audio_pretraining / hubert_pretraining)")
    model = {k: (v.half() if fp16 and v.is_floating_point() else v).clone() for k, v in state["model"].items()}
    hist = state.get("optimizer_history") or [{}]
    updates = int(hist[-1].get("num_updates", 0))
    packed = {"model": model, "cfg": state["cfg"], "args": None,
              "optimizer_history": [{"criterion_name": hist[-1].get("criterion_name", "Wav2vecCriterion"),
                                     "optimizer_name": hist[-1].get("optimizer_name", "Adam"),
                                     "lr_scheduler_state": {"best": None}, "num_updates": updates}],
              "extra_state": {"train_iterator": {"epoch": (state.get("extra_state") or {}).get(
                  "train_iterator", {}).get("epoch", 1)}},
              "last_optimizer_state": None}
    atomic_torch_save(packed, out)
    n = sum(v.numel() for k, v in state["model"].items() if v.is_floating_point())
    return {"file": Path(out).name, "sha256": sha256(out), "bytes": Path(out).stat().st_size,
            "architecture": architecture(state), "parameters": n, "updates": updates,
            "dtype": "float16" if fp16 else "float32"}
