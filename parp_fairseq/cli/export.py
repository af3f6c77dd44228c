"""``parp-fairseq-export``: squash a pruned checkpoint into a stock ``wav2vec_ctc`` checkpoint.

The masks are multiplied into the weights (zeros in place) and dropped; the model, task and
criterion configs are rewritten to fairseq's own ``wav2vec_ctc`` (``hubert_ctc`` for a
``parp_hubert_ctc`` checkpoint) / ``audio_finetuning`` / ``ctc`` so that plain fairseq loads the
file without ``--user-dir`` and computes the same logits.

fairseq's ``audio_finetuning`` pickles its ``Dictionary`` into checkpoints, which torch >= 2.6
refuses to load by default; the export drops it (fairseq then reads ``dict.<labels>.txt`` from
``task.data``, as for the released wav2vec 2.0 checkpoints) and keeps the symbols as a plain list
under ``task_state.parp_dictionary``. The optimizer state is dropped too.

    parp-fairseq-export parp/checkpoint_best.pt parp/stock.pt
    parp-fairseq-export parp/checkpoint_best.pt parp/small.pt --compress [--values-dtype fp16]

``--slice`` (structured checkpoints: ``pruning.granularity=neuron|head|neuron+head``) removes the
pruned neurons and heads: a smaller DENSE model, faster on every device. When every layer keeps
the same FFN width and all its heads the result is a stock ``wav2vec_ctc`` (its
``encoder_ffn_embed_dim`` changed); otherwise the plugin's ``parp_wav2vec_ctc_sliced`` with
per-layer widths and head counts (fairseq loads it with ``--user-dir``).

    parp-fairseq-export parp_neuron/checkpoint_best.pt parp/sliced.pt --slice

``--compress`` stores each pruned tensor as a bitmask plus its kept values (a 70%-sparse fp32
tensor shrinks ~3x). parp_fairseq's loaders (decode, mask, export) read such files directly;
``parp-fairseq-export small.pt stock.pt --decompress`` turns one back into a plain stock checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import List, Optional

import torch
from omegaconf import OmegaConf

from ..checkpoints import (COMPRESSED, DENSE_CTC, EXPORTED_CTC, PRETRAINED, checkpoint_kind, checkpoint_masks,
                           compress_state_dict, effective_weights, encoder_arch, encoder_family, is_pruning_key,
                           load_checkpoint, model_name, pruning_cfg)
from ..models.families import ctc_models
from ..errors import InputError
from ..errors import run_cli
from ..fsutil import atomic_torch_save, same_file

_STOCK = {"model": "wav2vec_ctc", "task": "audio_finetuning", "criterion": "ctc"}


def _stock_keys(group: str, model: str = "wav2vec_ctc") -> set:
    from fairseq.criterions.ctc import CtcCriterionConfig
    from fairseq.models.hubert.hubert_asr import HubertCtcConfig
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig

    dc = {"model": HubertCtcConfig if model == "hubert_ctc" else Wav2Vec2CtcConfig, "task": AudioFinetuningConfig,
          "criterion": CtcCriterionConfig}
    return {f.name for f in fields(dc[group])} | {"_name"}


def squash(state: dict) -> dict:
    """The stock-fairseq version of a loaded parp checkpoint ``state`` (a new dict)."""
    new_sd = effective_weights(state["model"])
    cfg = state["cfg"]
    cfg = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else dict(cfg)
    stock = {**_STOCK, "model": ctc_models(encoder_family(state))[1]}
    for group, name in stock.items():
        sub = cfg.get(group)
        if sub is None:
            continue
        if group != "model" and sub.get("_name") not in (name, f"parp_{name}", "parp_audio_finetuning"):
            continue  # a criterion/task of someone else: leave it alone
        keep = _stock_keys(group, stock["model"])
        cfg[group] = {k: v for k, v in sub.items() if k in keep}
        cfg[group]["_name"] = name
    cfg.setdefault("common", {})["user_dir"] = None
    task_state = dict(state.get("task_state") or {})
    dictionary = task_state.pop("target_dictionary", None)
    task_state.pop("parp_pruning", None)
    if dictionary is not None:
        task_state["parp_dictionary"] = list(dictionary.symbols)
    out = {k: v for k, v in state.items() if k not in ("model", "cfg", "task_state", "last_optimizer_state")}
    out.update(model=new_sd, cfg=cfg, task_state=task_state)
    return out


_PREFIX = "w2v_encoder.w2v_model."


def slice_state(state: dict) -> dict:
    """The smaller dense checkpoint of a structured-pruned parp checkpoint ``state`` (a new dict):
    pruned neurons' rows/columns and pruned heads' rows/columns removed, configs rewritten."""
    from ..pruning.structured import Granularity, collapse, slice_tensors

    pc = pruning_cfg(state)
    gran = str(pc.get("granularity", "weight"))
    if gran == "weight":
        raise InputError("--slice needs a STRUCTURED checkpoint (model.pruning.granularity=neuron, head "
                         "or neuron+head); this one is unstructured (granularity=weight): its zeros are "
                         "scattered and no row or column can go. Use --compress for a smaller file")
    arch = encoder_arch(state)
    masks = checkpoint_masks(state["model"])
    cut = Granularity(gran, arch["heads"])
    sets = cut.sets({n: list(m.shape) for n, m in masks.items()})
    try:
        groups = collapse(masks, sets)
    except ValueError as e:
        raise InputError(f"the checkpoint claims granularity={gran} but {e}") from None
    out = squash(state)
    out["model"] = slice_tensors(out["model"], sets, groups, prefix=_PREFIX)
    ffn, heads = [arch["ffn_dim"]] * arch["layers"], [arch["heads"]] * arch["layers"]
    for gs in sets:
        i = int(gs.layer.rsplit(".", 1)[1])
        (ffn if gs.kind == "neuron" else heads)[i] = int(groups[gs.key].sum())
    model = out["cfg"]["model"]
    if len(set(ffn)) == 1 and ffn[0] > 0 and all(h == arch["heads"] for h in heads):
        w2v = model.get("w2v_args")
        if not w2v or "model" not in w2v:
            raise InputError("the checkpoint's cfg.model.w2v_args is missing: cannot write the smaller "
                             "architecture into a stock config")
        w2v["model"]["encoder_ffn_embed_dim"] = ffn[0]
    else:
        model["_name"] = ctc_models(encoder_family(state))[0] + "_sliced"
        model["ffn_dims"], model["attention_heads"] = ffn, heads
    out["parp_sliced"] = {"granularity": gran, "ffn_dims": ffn, "attention_heads": heads,
                          "full": {"ffn_dim": arch["ffn_dim"], "heads": arch["heads"]}}
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="parp-fairseq-export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="parp_wav2vec_ctc / parp_hubert_ctc checkpoint (pruned or dense)")
    ap.add_argument("out", help="stock wav2vec_ctc / hubert_ctc checkpoint to write")
    ap.add_argument("--compress", action="store_true",
                    help="store pruned tensors as bitmask + kept values (read by parp_fairseq's loaders)")
    ap.add_argument("--values-dtype", choices=("fp32", "fp16", "bf16"), default=None,
                    help="with --compress: dtype of the stored weights (default: as trained)")
    ap.add_argument("--slice", action="store_true",
                    help="structured checkpoints: remove the pruned neurons and heads (a smaller dense model)")
    ap.add_argument("--decompress", action="store_true",
                    help="CHECKPOINT is a --compress export: write it back as a plain stock checkpoint")
    args = ap.parse_args(argv)
    return run_cli("parp-fairseq-export", lambda: _export(args))


def _export(args) -> int:
    same_file(args.checkpoint, args.out, "CHECKPOINT", "OUT")
    if args.values_dtype and not args.compress:
        raise ValueError("--values-dtype only applies with --compress")
    if args.slice and (args.compress or args.decompress):
        raise ValueError("--slice writes a smaller dense model; it does not combine with --compress/--decompress")
    state = load_checkpoint(args.checkpoint)  # decompresses a --compress file
    if args.decompress:
        if model_name(state) not in ("wav2vec_ctc", "hubert_ctc"):
            raise ValueError(f"--decompress expects an exported checkpoint, got model {model_name(state)!r}")
        atomic_torch_save(state, args.out)
        print(f"wrote {args.out}: plain stock {model_name(state)} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")
        return 0
    name = model_name(state)
    if checkpoint_kind(state) == PRETRAINED:
        raise ValueError(f"{args.checkpoint} is a pretrained {name!r} checkpoint, not a "
                         f"finetuned CTC model: nothing to export")
    if name in EXPORTED_CTC:
        raise ValueError(f"{args.checkpoint} is already an exported {name} checkpoint")
    if args.slice:
        out = slice_state(state)
        atomic_torch_save(out, args.out)
        n_before = sum(v.numel() for k, v in state["model"].items() if k.startswith(_PREFIX) and not is_pruning_key(k))
        n_after = sum(v.numel() for k, v in out["model"].items() if k.startswith(_PREFIX))
        sl = out["parp_sliced"]
        print(f"wrote {args.out}: {model_name(out)}, FFN widths {sl['ffn_dims']} of {sl['full']['ffn_dim']}, "
              f"heads {sl['attention_heads']} of {sl['full']['heads']}; encoder parameters "
              f"{n_before / 1e6:.2f}M -> {n_after / 1e6:.2f}M ({os.path.getsize(args.out) / 2**20:.2f} MiB)")
        return 0
    out = squash(state)
    if args.compress:
        dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(args.values_dtype)
        out["model"] = compress_state_dict(out["model"], dt)
        out[COMPRESSED] = {"format": 1, "values_dtype": args.values_dtype or "as trained"}
    atomic_torch_save(out, args.out)
    n_masked = sum(k.endswith("_mask") for k in state["model"])
    print(f"wrote {args.out}: stock {model_name(out)}, {n_masked} masks squashed into the weights"
          + (" (dense model)" if checkpoint_kind(state) == DENSE_CTC else "")
          + (f", compressed to {os.path.getsize(args.out) / 2**20:.2f} MiB" if args.compress else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
