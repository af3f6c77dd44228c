"""``parp-fairseq-imp``: iterative magnitude pruning with rewinding, in one command.

Round 0 finetunes dense (or reuses ``--start-checkpoint``). Round r >= 1 computes a global
magnitude mask on round r-1's finetuned weights that removes ``--rate`` of the REMAINING weights
(weights removed earlier stay removed), rewinds to ``--rewind`` (the pretrained init, or the
weights of an early finetuning checkpoint) and finetunes with that mask held fixed. The last
round lands exactly on ``--sparsity``. Each round is a stock ``fairseq-hydra-train`` run of the
same config; finished rounds are skipped, so an interrupted run resumes where it stopped.

    parp-fairseq-imp --config-dir configs/finetune --config-name base_10m --workdir exp/imp_s60 \\
        --sparsity 0.6 --rate 0.2 -- task.data=$DATA model.w2v_path=$PT

Outputs in ``--workdir``: ``round{r}/`` (fairseq save dirs), ``mask_round{r}.pt``,
``final_mask.pt``, ``final_checkpoint.pt`` (the last round's checkpoint) and ``imp_rounds.tsv``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from .._compat import hydra_train_cmd
from ..errors import run_cli
from ..fsutil import atomic_copy, atomic_write_text
from ..procutil import run_child, workdir_lock
from ..pruning.schedule import IMP_SCHEDULES, imp_schedule

logger = logging.getLogger("parp_fairseq.imp")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="parp-fairseq-imp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-dir", required=True)
    ap.add_argument("--config-name", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--sparsity", type=float, required=True, help="final sparsity (fraction removed)")
    ap.add_argument("--rate", type=float, default=0.1,
                    help="fraction removed per round (0.1 as in the paper); of the REMAINING weights with "
                         "--schedule remaining, of the ORIGINAL weights with --schedule original")
    ap.add_argument("--schedule", choices=IMP_SCHEDULES, default="remaining",
                    help="remaining: round r reaches 1-(1-rate)^r (geometric); original: the official PARP "
                         "code, round r reaches r*rate (10%%, 20%%, ... of the total at rate 0.1)")
    ap.add_argument("--rewind", default="pretrained",
                    help="'pretrained' (model.w2v_path) or a finetuning checkpoint to rewind to")
    ap.add_argument("--start-checkpoint", help="dense finetuned checkpoint to use as round 0")
    ap.add_argument("--select", choices=("last", "best"), default="last",
                    help="which checkpoint of a round the next mask is computed from")
    ap.add_argument("--ranking", default="global", choices=("global", "layer", "tensor"))
    ap.add_argument("--granularity", default="weight", choices=("weight", "neuron", "head", "neuron+head"),
                    help="prune weights, or whole FFN neurons / attention heads (every round's mask and "
                         "model.pruning.granularity)")
    ap.add_argument("overrides", nargs="*", help="hydra overrides for every round (after --)")
    return ap


def _train(args, save_dir: str, extra: List[str]) -> None:
    """One round: a ``fairseq-hydra-train`` child that dies with this command."""
    cmd = hydra_train_cmd(args.config_dir, args.config_name, save_dir, *args.overrides, *extra)
    logger.info("running: " + " ".join(cmd))
    rc = run_child(cmd)
    if rc != 0:
        raise RuntimeError(f"round in {save_dir} failed (fairseq-hydra-train exit {rc}); its log is above")


def _ckpt(save_dir: str, select: str) -> str:
    path = os.path.join(save_dir, f"checkpoint_{select}.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: the round did not save a checkpoint "
                                f"(check checkpoint.no_last_checkpoints / no_save)")
    return path


def run(args: argparse.Namespace) -> str:
    from ..checkpoints import load_checkpoint

    sched = imp_schedule(args.sparsity, args.rate, args.schedule)
    if args.rewind != "pretrained" and not os.path.isfile(args.rewind):
        raise FileNotFoundError(f"--rewind {args.rewind!r}: give 'pretrained' or an existing checkpoint")
    for path in (args.start_checkpoint, None if args.rewind == "pretrained" else args.rewind):
        if path:
            load_checkpoint(path)  # refuse an unsafe or broken file before any round runs
    with workdir_lock(args.workdir, "parp-fairseq-imp"):
        return _rounds(args, sched)


def _rounds(args, sched) -> str:
    from ..cli import mask as mask_cli
    from ..pruning.maskfile import load_mask_file

    rows = []
    if args.start_checkpoint:
        prev_ckpt = args.start_checkpoint
    else:
        d0 = os.path.join(args.workdir, "round0")
        if not os.path.exists(os.path.join(d0, "DONE")):
            _train(args, d0, ["pruning=none"])
            open(os.path.join(d0, "DONE"), "w").close()
        prev_ckpt = _ckpt(d0, args.select)
    rows.append((0, 0.0, 0.0, prev_ckpt, ""))
    prev_mask = None
    for r, s in enumerate(sched, start=1):
        d = os.path.join(args.workdir, f"round{r}")
        mpath = os.path.join(args.workdir, f"mask_round{r}.pt")
        if not os.path.isfile(mpath):
            margs = ["omp", "--checkpoint", prev_ckpt, "--sparsity", str(s), "--out", mpath,
                     "--ranking", args.ranking, "--granularity", args.granularity, "--meta", f"imp_round={r}"]
            if prev_mask:
                margs += ["--keep", prev_mask]
            if mask_cli.main(margs) != 0:
                raise RuntimeError(f"mask computation of round {r} failed")
        if not os.path.exists(os.path.join(d, "DONE")):
            extra = ["pruning=imp", f"model.pruning.mask_path={mpath}", f"model.pruning.granularity={args.granularity}"]
            if args.rewind != "pretrained":
                extra.append(f"model.pruning.init_from={os.path.abspath(args.rewind)}")
            _train(args, d, extra)
            open(os.path.join(d, "DONE"), "w").close()
        prev_ckpt, prev_mask = _ckpt(d, args.select), mpath
        rows.append((r, s, load_mask_file(mpath).report()["global"], prev_ckpt, mpath))
    if prev_mask:
        atomic_copy(prev_mask, os.path.join(args.workdir, "final_mask.pt"))
    atomic_copy(prev_ckpt, os.path.join(args.workdir, "final_checkpoint.pt"))
    atomic_write_text(os.path.join(args.workdir, "imp_rounds.tsv"), "round\ttarget_sparsity\tmask_sparsity\tcheckpoint\tmask\n" + "".join(
        "\t".join(f"{x:.6f}" if isinstance(x, float) else str(x) for x in row) + "\n" for row in rows))
    return os.path.join(args.workdir, "final_checkpoint.pt")


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stdout)
    args = build_parser().parse_args(argv)

    def body() -> int:
        final = run(args)
        print(f"IMP done: {final} (mask {os.path.join(args.workdir, 'final_mask.pt')})")
        return 0

    return run_cli("parp-fairseq-imp", body, extra=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
