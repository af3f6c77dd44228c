"""``parp-fairseq-mask``: compute, extract and inspect mask files.

Examples::

    # OMP: global magnitude mask of a FINETUNED model (to be applied at the pretrained init)
    parp-fairseq-mask omp --checkpoint ft/checkpoint_best.pt --sparsity 0.6 --out omp60.pt
    # MPI: magnitude mask of the PRETRAINED model
    parp-fairseq-mask mpi --checkpoint wav2vec_small.pt --sparsity 0.6 --out mpi60.pt
    # random mask with the same shapes
    parp-fairseq-mask random --checkpoint wav2vec_small.pt --sparsity 0.6 --seed 1 --out rnd60.pt
    # the masks of a pruned checkpoint (PARP / IMP result, for transfer or analysis)
    parp-fairseq-mask extract --checkpoint parp/checkpoint_best.pt --out parp60.pt
    parp-fairseq-mask info omp60.pt
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import List, Optional

from ..checkpoints import (PRETRAINED, PRUNED_CTC, checkpoint_kind, checkpoint_masks, encoder_arch,
                           encoder_family, load_checkpoint, model_name, pruning_cfg, target_weights)
from ..errors import run_cli
from ..fsutil import same_file
from ..models.parp_wav2vec2 import DEFAULT_PATTERN
from ..pruning.magnitude import RANKINGS, check_sparsity
from ..pruning.maskfile import MaskFile, check_compatible, load_mask_file, save_mask_file
from ..pruning.structured import GRANULARITIES, GROUP_NORMS, Granularity


def _common(p: argparse.ArgumentParser, sparsity: bool = True) -> None:
    p.add_argument("--checkpoint", required=True, help="fairseq checkpoint to read weights from")
    p.add_argument("--out", required=True, help="mask file to write (.pt)")
    if sparsity:
        p.add_argument("--sparsity", required=True, type=float,
                       help="fraction of the target weights REMOVED, in [0, 1)")
        p.add_argument("--ranking", choices=RANKINGS, default="global",
                       help="global (PARP/OMP papers), layer, or tensor ranking")
        p.add_argument("--pattern", default=DEFAULT_PATTERN,
                       help="regex of the module names to prune (as pruning.pattern)")
        p.add_argument("--prune-bias", action="store_true", help="also mask the biases (granularity weight)")
        p.add_argument("--granularity", choices=GRANULARITIES, default="weight",
                       help="weight (unstructured), or whole FFN neurons / attention heads (as "
                            "pruning.granularity; sliceable with parp-fairseq-export --slice)")
        p.add_argument("--group-norm", choices=GROUP_NORMS, default="l1",
                       help="structured: rank groups by mean |w| (l1) or RMS (l2) of their weights")
        p.add_argument("--remove-whole-layers", action="store_true",
                       help="structured: allow a layer to lose all its heads / neurons")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="free-form metadata stored in the file (e.g. lang=nl)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="parp-fairseq-mask", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("omp", help="magnitude mask of a finetuned CTC checkpoint")
    _common(p)
    p.add_argument("--keep", help="previous mask: removed entries stay removed (IMP rounds)")
    p = sub.add_parser("mpi", help="magnitude mask of a pretrained checkpoint")
    _common(p)
    p = sub.add_parser("random", help="random mask with the shapes of a checkpoint")
    _common(p)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("extract", help="the masks stored in a pruned checkpoint")
    _common(p, sparsity=False)
    p = sub.add_parser("info", help="print a mask file's sparsity table")
    p.add_argument("mask")
    return ap


def _meta(items: List[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--meta expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def compute(args: argparse.Namespace, state: Optional[dict] = None) -> MaskFile:
    """The mask a subcommand asks for (nothing is written); ``state``: ``args.checkpoint`` already
    loaded (by :func:`load_checkpoint`), so that several masks of one checkpoint read it once."""
    state = load_checkpoint(args.checkpoint) if state is None else state
    kind, name = checkpoint_kind(state), model_name(state)
    if args.cmd == "extract":
        if kind != PRUNED_CTC:
            raise ValueError(f"{args.checkpoint} ({name}) holds no masks: it is a dense checkpoint; "
                             f"use `omp` (finetuned) or `mpi` (pretrained) to compute one")
        pc = pruning_cfg(state)
        cut = Granularity(str(pc.get("granularity", "weight")), encoder_arch(state)["heads"],
                          str(pc.get("group_norm", "l1")))
        mf = MaskFile(checkpoint_masks(state["model"]), 0.0, str(pc.get("method", "extract")),
                      str(pc.get("ranking", "global")), args.checkpoint, _meta(args.meta),
                      cut.granularity, cut.num_heads, cut.norm, encoder_family(state))
        mf.sparsity = mf.report()["global"] if pc.get("sparsity") is None else float(pc["sparsity"])
        return mf
    check_sparsity(args.sparsity, "--sparsity")
    try:
        re.compile(args.pattern)
    except re.error as e:
        raise ValueError(f"--pattern {args.pattern!r} is not a valid regular expression ({e})") from None
    cut = Granularity(args.granularity, encoder_arch(state)["heads"], args.group_norm, args.remove_whole_layers)
    cut.check_ranking(args.ranking)
    params = ("weight", "bias") if args.prune_bias or cut.structured else ("weight",)
    weights = target_weights(state["model"], args.pattern, params)
    weights = type(weights)((n, w) for n, w in weights.items() if cut.selects(n))
    if not weights:
        raise ValueError(f"--pattern {args.pattern!r} matches no tensor of a {args.granularity} group")
    if args.cmd == "omp" and kind == PRETRAINED:
        raise ValueError(f"{args.checkpoint} is a pretrained {name!r} checkpoint: OMP ranks the weights "
                         f"of a FINETUNED model. For the pretrained weights use `mpi`")
    if args.cmd == "mpi" and kind != PRETRAINED:
        raise ValueError(f"{args.checkpoint} is a finetuned {name!r} checkpoint: MPI ranks the "
                         f"PRETRAINED weights (model.w2v_path). For a finetuned model use `omp`")
    meta = _meta(args.meta)
    if args.cmd == "random":
        masks = cut.random({n: w.shape for n, w in weights.items()}, args.sparsity, args.ranking, args.seed)
        meta.setdefault("seed", args.seed)
    else:
        keep = None
        if getattr(args, "keep", None):
            prev = load_mask_file(args.keep)
            if prev.granularity != cut.granularity:
                raise ValueError(f"--keep mask {args.keep} has granularity={prev.granularity}, this "
                                 f"round asks for --granularity {cut.granularity}")
            check_compatible(prev.masks, {n: list(w.shape) for n, w in weights.items()},
                             what=f"--keep mask {args.keep}", target="checkpoint")
            keep = prev.masks
        masks = cut.magnitude(weights, args.sparsity, args.ranking, keep=keep)
    return MaskFile(masks, args.sparsity, args.cmd, args.ranking, args.checkpoint, meta,
                    cut.granularity, cut.num_heads, cut.norm, encoder_family(state))


def print_info(mf: MaskFile, path: str, file=None) -> None:
    file = file or sys.stdout
    rep = mf.report()
    print(f"# {path}: method={mf.method} family={mf.family or '?'} granularity={mf.granularity} ranking={mf.ranking} "
          f"target_sparsity={mf.sparsity} "
          f"source={mf.source} meta={mf.meta}", file=file)
    print("group\tsparsity", file=file)
    for k, v in rep.items():
        print(f"{k}\t{v:.4f}", file=file)
    if mf.granularity != "weight":  # what --slice would keep
        from ..pruning.structured import Granularity, collapse

        cut = Granularity(mf.granularity, mf.num_heads, mf.group_norm)
        sets = cut.sets(mf.shapes)
        groups = collapse(mf.masks, sets)
        print("layer\tkind\tkept\tof", file=file)
        for gs in sets:
            print(f"{gs.layer}\t{gs.kind}\t{int(groups[gs.key].sum())}\t{gs.n}", file=file)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.cmd == "info":
            print_info(load_mask_file(args.mask), args.mask)
            return 0
        same_file(args.checkpoint, args.out, "--checkpoint", "--out")
        mf = compute(args)
        save_mask_file(args.out, mf)
        print_info(mf, args.out)
        return 0

    return run_cli("parp-fairseq-mask", body)


if __name__ == "__main__":
    sys.exit(main())
