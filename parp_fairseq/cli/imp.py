"""``parp-fairseq-imp``: iterative magnitude pruning with rewinding, in one command.

Round 0 finetunes dense (or reuses ``--start-checkpoint``). Round r >= 1 computes a global
magnitude mask on round r-1's finetuned weights that removes ``--rate`` of the REMAINING weights
(weights removed earlier stay removed), rewinds to ``--rewind`` (the pretrained init, or the
weights of an early finetuning checkpoint) and finetunes with that mask held fixed. The last
round lands exactly on ``--sparsity``. Each round is a stock ``fairseq-hydra-train`` run of the
same config; finished rounds are skipped, so an interrupted run resumes where it stopped.

Runs to several sparsities share their first rounds (with ``--schedule original`` the run to 50 %
passes through 10 %, 20 %, 30 %): ``--reuse-from`` names earlier IMP work folders, and the longest
run of leading rounds one of them finished with the same settings and the same round sparsities is
linked in instead of retrained.

    parp-fairseq-imp --config-dir configs/finetune --config-name base_10m --workdir exp/imp_s60 \\
        --sparsity 0.6 --rate 0.2 -- task.data=$DATA model.w2v_path=$PT
    parp-fairseq-imp ... --workdir exp/imp_s80 --sparsity 0.8 --rate 0.2 --reuse-from exp/imp_s60 -- ...

Outputs in ``--workdir``: ``round{r}/`` (fairseq save dirs), ``mask_round{r}.pt``,
``final_mask.pt``, ``final_checkpoint.pt`` (the last round's checkpoint), ``imp_rounds.tsv`` and
``imp.json`` (the settings every round was made with; a rerun with other settings is refused) and
``threads`` and ``cpu`` (the torch thread count of the rounds, ``--threads``, and the CPU and torch
build they ran on: a seed's numbers depend on both).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

from .._compat import hydra_train_cmd
from ..errors import run_cli
from ..fsutil import atomic_copy, atomic_link, atomic_write_text
from ..procutil import record_cpu_run, run_child, torch_threads, workdir_lock
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
    ap.add_argument("--reuse-from", action="append", default=[], metavar="WORKDIR",
                    help="an earlier IMP work folder of the same settings (repeatable): its finished leading "
                         "rounds that this schedule shares are linked in, not retrained")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (OMP_NUM_THREADS) of every round's training run. Default: the environment's "
                         "OMP_NUM_THREADS, else torch's own (every core). A seed's numbers depend on the thread count: "
                         "the count is recorded in --workdir (file `threads`, the CPU kind in `cpu`) and a resume with "
                         "another is warned about")
    ap.add_argument("overrides", nargs="*", help="hydra overrides for every round (after --)")
    return ap


SETTINGS_FILE = "imp.json"


def settings(args: argparse.Namespace) -> Dict:
    """What every round of a run depends on, the final sparsity aside (paths resolved)."""
    def path(p: Optional[str]) -> Optional[str]:
        return os.path.realpath(p) if p else None

    return {"config_dir": path(args.config_dir), "config_name": args.config_name, "rate": args.rate,
            "schedule": args.schedule, "rewind": args.rewind if args.rewind == "pretrained" else path(args.rewind),
            "start_checkpoint": path(args.start_checkpoint), "select": args.select, "ranking": args.ranking,
            "granularity": args.granularity, "overrides": list(args.overrides)}


def read_settings(workdir: str) -> Optional[Dict]:
    """The ``imp.json`` of an IMP work folder (None where it has none)."""
    path = os.path.join(workdir, SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        rec = json.loads(open(path, encoding="utf-8").read())
        ok = isinstance(rec, dict) and isinstance(rec.get("settings"), dict) and isinstance(rec.get("sparsity"), float) \
            and isinstance(rec.get("rounds"), list) and all(isinstance(x, float) for x in rec["rounds"])
        problem = "" if ok else "it lacks settings / sparsity / rounds"
    except ValueError as e:
        problem = f"not valid JSON: {e}"
    if problem:
        raise ValueError(f"{path}: {problem}. It is parp-fairseq-imp's record of the settings the rounds there were "
                         "made with; move it away only if they were made with this command's settings")
    return rec


def _differences(a: Dict, b: Dict) -> List[str]:
    return [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _round_done(workdir: str, r: int, select: str) -> bool:
    d = os.path.join(workdir, f"round{r}")
    return os.path.exists(os.path.join(d, "DONE")) and os.path.isfile(os.path.join(d, f"checkpoint_{select}.pt")) \
        and os.path.isfile(os.path.join(workdir, f"mask_round{r}.pt"))


def shared_rounds(mine: Dict, sched: List[float], src: str) -> int:
    """How many leading rounds of ``sched`` the IMP work folder ``src`` finished with the settings
    ``mine`` and the same round sparsities. Raises ValueError where ``src`` has other settings."""
    rec = read_settings(src)
    if rec is None:
        raise ValueError(f"--reuse-from {src}: no {SETTINGS_FILE} there (not an IMP work folder, or one made before "
                         "parp-fairseq-imp recorded its settings); its rounds can't be checked, so they are not reused")
    diff = _differences(rec["settings"], mine)
    if diff:
        raise ValueError(f"--reuse-from {src}: made with other settings ({'; '.join(diff)}); "
                         "only rounds of the same settings can be shared")
    n = 0
    for r, (a, b) in enumerate(zip(rec["rounds"], sched), start=1):
        if abs(a - b) > 1e-9 or not _round_done(src, r, mine["select"]):
            break
        n = r
    return n


def _link_round(src: str, dst: str, r: int) -> None:
    """Round ``r`` of ``src`` into ``dst``: its mask and checkpoints as hard links, then DONE."""
    d = os.path.join(dst, f"round{r}")
    os.makedirs(d, exist_ok=True)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        if os.path.isfile(os.path.join(src, f"round{r}", name)):
            atomic_link(os.path.join(src, f"round{r}", name), os.path.join(d, name))
    atomic_link(os.path.join(src, f"mask_round{r}.pt"), os.path.join(dst, f"mask_round{r}.pt"))
    atomic_write_text(os.path.join(d, "REUSED_FROM"), os.path.realpath(os.path.join(src, f"round{r}")) + "\n")
    open(os.path.join(d, "DONE"), "w").close()


def thread_env(threads: Optional[int], environ=None) -> Optional[Dict[str, str]]:
    """The rounds' environment: ``OMP_NUM_THREADS`` from ``--threads``, else the environment's, else None
    (torch's default); see :func:`~parp_fairseq.procutil.torch_threads`."""
    count = torch_threads(threads, environ)
    return {"OMP_NUM_THREADS": count} if count else None


def _train(args, save_dir: str, extra: List[str], env: Optional[Dict[str, str]]) -> None:
    """One round: a ``fairseq-hydra-train`` child (environment ``env`` on top of this one's) that dies
    with this command."""
    cmd = hydra_train_cmd(args.config_dir, args.config_name, save_dir, *args.overrides, *extra)
    logger.info("running: " + " ".join(cmd))
    rc = run_child(cmd, env=env)
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
    env = thread_env(args.threads)  # a bad --threads is refused before anything is written
    mine = settings(args)
    shared = []  # (leading rounds shared, folder) of every --reuse-from, checked before anything is written
    for src in args.reuse_from:
        if not os.path.isdir(src):
            raise FileNotFoundError(f"--reuse-from {src!r}: no such folder; give an earlier IMP --workdir")
        if os.path.realpath(src) != os.path.realpath(args.workdir):
            shared.append((shared_rounds(mine, sched, src), src))
    with workdir_lock(args.workdir, "parp-fairseq-imp"):
        _record_settings(args, mine, sched)
        if env:
            logger.info(f"every round trains with {env['OMP_NUM_THREADS']} torch thread(s)")
        else:
            logger.info("rounds train with torch's default thread count (every core): pass --threads (or set "
                        "OMP_NUM_THREADS) for numbers that repeat on a machine with another core count")
        record_cpu_run(args.workdir, env, logger.warning, tool="imp")
        _reuse(args, sched, shared)
        return _rounds(args, sched, env)


def _record_settings(args, mine: Dict, sched: List[float]) -> None:
    """Write ``imp.json`` (the settings, the last ``--sparsity`` and the sparsity of every round this folder
    makes); refuse a work folder whose rounds were made with other settings or to other sparsities."""
    rec = read_settings(args.workdir)
    rounds = list(sched)
    if rec is not None:
        diff = _differences(rec["settings"], mine)
        if diff:
            raise ValueError(f"{args.workdir} holds IMP rounds made with other settings ({'; '.join(diff)}); "
                             "give a new --workdir (or rerun with the settings it was made with)")
        for r, (a, b) in enumerate(zip(rec["rounds"], sched), start=1):
            if abs(a - b) > 1e-9 and os.path.exists(os.path.join(args.workdir, f"mask_round{r}.pt")):
                raise ValueError(f"{args.workdir}: its round {r} was made at sparsity {a:g}, this schedule's round {r} "
                                 f"is {b:g} (--sparsity {rec['sparsity']:g} before, {args.sparsity:g} now); give a new "
                                 "--workdir and --reuse-from this one to share the rounds that agree")
        rounds += rec["rounds"][len(sched):]  # rounds an earlier, longer run made here stay on record
    elif any(n.startswith(("round", "mask_round")) for n in os.listdir(args.workdir)):
        logger.warning(f"{args.workdir} has rounds but no {SETTINGS_FILE} (made before parp-fairseq-imp recorded "
                       "its settings): they are taken as made with this command's settings")
    atomic_write_text(os.path.join(args.workdir, SETTINGS_FILE), json.dumps(
        {"settings": mine, "sparsity": args.sparsity, "rounds": rounds}, indent=1) + "\n")


def _reuse(args, sched: List[float], shared: List[Tuple[int, str]]) -> None:
    """Link in the longest run of leading rounds an earlier work folder shares (into a fresh work folder
    only: a round is never mixed with rounds of another chain)."""
    if not shared or _round_done(args.workdir, 1, args.select):
        return
    n, src = max(shared)
    for r in range(1, n + 1):
        _link_round(src, args.workdir, r)
    if n:
        logger.info(f"rounds 1-{n} (to sparsity {sched[n - 1]:g}) linked from {src}; training from round {n + 1}")
    else:
        logger.info("no earlier run shares this schedule's first round; training every round")


def _rounds(args, sched, env: Optional[Dict[str, str]]) -> str:
    from ..cli import mask as mask_cli
    from ..pruning.maskfile import load_mask_file

    rows = []
    if args.start_checkpoint:
        prev_ckpt = args.start_checkpoint
    else:
        d0 = os.path.join(args.workdir, "round0")
        if not os.path.exists(os.path.join(d0, "DONE")):
            _train(args, d0, ["pruning=none"], env)
            open(os.path.join(d0, "DONE"), "w").close()
        prev_ckpt = _ckpt(d0, args.select)
    rows.append((0, 0.0, 0.0, prev_ckpt, "", ""))
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
            _train(args, d, extra, env)
            open(os.path.join(d, "DONE"), "w").close()
        prev_ckpt, prev_mask = _ckpt(d, args.select), mpath
        reused = os.path.join(d, "REUSED_FROM")
        src = open(reused, encoding="utf-8").read().strip() if os.path.isfile(reused) else ""
        rows.append((r, s, load_mask_file(mpath).report()["global"], prev_ckpt, mpath, src))
    if prev_mask:
        atomic_copy(prev_mask, os.path.join(args.workdir, "final_mask.pt"))
    atomic_copy(prev_ckpt, os.path.join(args.workdir, "final_checkpoint.pt"))
    atomic_write_text(os.path.join(args.workdir, "imp_rounds.tsv"), "round\ttarget_sparsity\tmask_sparsity\tcheckpoint\tmask\ttrained_in\n" + "".join(
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
