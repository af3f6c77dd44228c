#!/usr/bin/env python
"""The one-command demo: offline speech corpus -> the shipped pretrained wav2vec 2.0 -> dense, OMP and
PARP CTC finetuning at one sparsity -> Viterbi and KenLM decoding -> results table and plot.

Everything runs on CPU through the real fairseq loops (``fairseq-hydra-train``) in ~11 minutes on
2 cores:

1. ``parp-fairseq-corpus build --tier small``: 11 synthesized languages + real recorded English/Dutch;
2. the shipped pretrained wav2vec 2.0 (``parp-fairseq-pretrained info``, docs/pretrained_model.md),
   sha256-verified; ``--pretrained CKPT`` uses another one, ``--pretrain`` reproduces it from scratch
   (stock ``audio_pretraining``, ``configs/pretrain/shipped``: hours of CPU);
3. English letter CTC finetuning (``configs/finetune/mini``): dense and, beside it on the second core,
   PARP (MPI mask, re-pruned every 50 updates); then OMP (mask of the finetuned dense model, finetuned
   from the pretrained init);
4. a 4-gram KenLM + lexicon from the English text (test sentences held out);
5. ``parp-fairseq-decode`` on the held-out synthetic speakers (Viterbi and KenLM) and on the real
   LibriVox recordings.

Finished steps are skipped on a rerun. Writes ``results.tsv``, ``results.md`` and ``results.png``.

    python scripts/demo.py --workdir exp/demo --sparsity 0.5
"""

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parp_fairseq._compat import hydra_train_cmd  # noqa: E402
from parp_fairseq.checkpoints import load_checkpoint  # noqa: E402
from parp_fairseq.cli import decode as decode_cli  # noqa: E402
from parp_fairseq.cli import mask as mask_cli  # noqa: E402
from parp_fairseq import pretrained as shipped  # noqa: E402
from parp_fairseq.data import speech  # noqa: E402
from parp_fairseq.errors import ParpFairseqError  # noqa: E402
from parp_fairseq.decoding import lm as lm_cli  # noqa: E402
from parp_fairseq.reporting import fairseq_log_curve, plot_curve  # noqa: E402

T0 = time.time()
DEMO_UPDATES = 800


def step(msg: str) -> None:
    print(f"\n=== [{time.strftime('%H:%M:%S')} +{time.time() - T0:.0f}s] {msg}", flush=True)


def _progress(line: str) -> str:
    """The fields of one fairseq train_inner / valid log line worth showing, or '' for other lines."""
    if "][train_inner]" not in line and "][valid]" not in line:
        return ""
    msg = line.split("] - ", 1)[-1]
    keep = [kv for kv in msg.replace(" | ", ", ").split(", ")
            if kv.split("=")[0].split(" ")[0] in ("epoch", "loss", "uer", "wer", "num_updates",
                                                    "accuracy", "sparsity", "valid")]
    return ", ".join(keep).strip()[:160]


def train_many(runs, threads: int = 0) -> list:
    """Run ``fairseq-hydra-train`` for each ``(config_dir, name, save_dir, overrides)`` side by side,
    each with ``threads`` intra-op threads (0 = torch's default), showing fairseq's own progress lines
    prefixed with the run's folder name; runs done before are skipped. Returns the checkpoints.

    Two small CPU runs on one thread each finish sooner than the same two one after the other on two
    threads: a 2M-parameter model does not keep two threads busy."""
    todo, ckpts = [], []
    for config_dir, name, save_dir, overrides in runs:
        ckpts.append(save_dir / "checkpoint_last.pt")
        if (save_dir / "DONE").exists():
            print(f"  (done before: {ckpts[-1]})")
        else:
            todo.append((hydra_train_cmd(REPO / config_dir, name, save_dir, *overrides), save_dir))
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}))
    procs, tails, lock = [], {}, threading.Lock()

    def pump(p, save_dir):
        tag = f"[{save_dir.name}] " if len(todo) > 1 else ""
        for line in p.stdout:
            tails[save_dir] = (tails.get(save_dir, []) + [line])[-30:]
            shown = _progress(line)
            if shown:
                with lock:
                    print("  " + tag + shown, flush=True)

    for cmd, save_dir in todo:
        print("  $ " + " ".join(cmd), flush=True)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        t = threading.Thread(target=pump, args=(p, save_dir), daemon=True)
        t.start()
        procs.append((p, t, save_dir))
    failed = []
    for p, t, save_dir in procs:
        p.wait()
        t.join()
        if p.returncode != 0:
            failed.append((p, save_dir))
        else:
            (save_dir / "DONE").touch()
    for p, save_dir in failed:
        print("".join(tails.get(save_dir, [])), file=sys.stderr)
    if failed:
        raise SystemExit("training failed: " + "; ".join(f"exit {p.returncode}, log: {d}/hydra" for p, d in failed))
    return ckpts


def train(config_dir: str, name: str, save_dir: Path, *overrides: str) -> Path:
    """fairseq-hydra-train, showing fairseq's own progress lines; skipped when done before."""
    return train_many([(config_dir, name, save_dir, overrides)])[0]


def decode(ckpt: Path, data: Path, split: str, out: Path, lm: Path = None) -> dict:
    files = (lm / "lm.bin", lm / "lexicon.txt") if lm is not None else ()
    if not decode_cli.results_are_current(out, ckpt, *files):  # none yet, or of an older checkpoint / LM
        args = ["--checkpoint", str(ckpt), "--data", str(data), "--split", split, "--results-dir", str(out)]
        if lm is not None:
            args += ["--decoder", "kenlm", "--lm", str(lm / "lm.bin"), "--lexicon", str(lm / "lexicon.txt"),
                     "--lm-weight", "2", "--word-score", "-1"]
        if decode_cli.main(args) != 0:
            raise SystemExit(f"decoding {ckpt} failed")
    r = decode_cli.read_summary(out)[0]
    ref = (out / "ref.word").read_text().splitlines()[0].rsplit(" (", 1)[0]
    hyp = (out / "hypo.word").read_text().splitlines()[0].rsplit(" (", 1)[0]
    return {"wer": float(r["WER"]), "cer": float(r["CER"]), "example": (ref, hyp)}


def plot(rows, path: Path, sparsity: float, model_name: str) -> None:
    from parp_fairseq.reporting import pyplot

    plt = pyplot()

    names = [r["method"] for r in rows]
    keys = [("test_WER_viterbi", "test WER, Viterbi"), ("test_WER_kenlm", "test WER, 4-gram KenLM"),
            ("test_CER", "test CER, Viterbi"), ("real_WER_kenlm", "real speech WER, KenLM")]
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(keys)
    for i, (k, label) in enumerate(keys):
        ax.bar([j + i * w for j in range(len(rows))], [r[k] for r in rows], w, label=label)
    ax.set_xticks([j + w * (len(keys) - 1) / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{n}\n(s={r['actual_sparsity']:.2f})" for n, r in zip(names, rows)])
    ax.set_ylabel("error rate (%)")
    ax.set_title(f"wav2vec 2.0 ({model_name}), English letters: dense vs pruned at sparsity {sparsity}", fontsize=9)
    ax.set_ylim(0, 115)
    ax.legend(fontsize=8, loc="upper center", ncol=4, framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    for name in ("fairseq", "parp_fairseq", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="exp/demo")
    ap.add_argument("--data", default=None, help="corpus folder (default: <workdir>/data)")
    ap.add_argument("--tier", default="small", choices=sorted(speech.TIERS))
    ap.add_argument("--sparsity", type=float, default=0.5)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--pretrained", default=None,
                     help="finetune this pretrained wav2vec 2.0 checkpoint (default: the shipped model)")
    src.add_argument("--pretrain", action="store_true",
                     help="reproduce the shipped model from scratch first: the full-tier corpus + real recordings, "
                          "stock audio_pretraining with configs/pretrain/shipped.yaml (hours on CPU)")
    ap.add_argument("--pretrain-updates", type=int, default=None,
                    help="with --pretrain: pretraining updates (default: the shipped model's)")
    ap.add_argument("--updates", type=int, default=DEMO_UPDATES, help="finetuning updates per method")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="finetuning runs side by side (dense and PARP; 1 = one after the other)")
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    s = args.sparsity

    step(f"1/6 offline speech corpus ({args.tier} tier: 11 synthesized languages + real recordings)")
    try:
        data = speech.prepare(args.data or work / "data", args.tier)
    except speech.CorpusError as e:
        raise SystemExit(f"demo: {e}")
    en = data / "en"
    step("2/6 the pretrained wav2vec 2.0")
    if args.pretrained:
        pt = Path(args.pretrained)
        print(f"  using {pt}")
    elif args.pretrain:
        entry = shipped.SHIPPED.get(shipped.DEFAULT, {})
        updates = args.pretrain_updates or entry.get("updates") or 6000
        try:
            pdata = speech.prepare(work / "pretrain_data", "full")
        except speech.CorpusError as e:
            raise SystemExit(f"demo: {e}")
        t_pre = time.time()
        pt = train("configs/pretrain", "shipped", work / "pretrain", f"task.data={pdata / 'pretrain'}",
                   f"optimization.max_update={updates}")
        curve = fairseq_log_curve(work / "pretrain" / "hydra" / "hydra_train.log")
        if curve:
            plot_curve(curve, work / "pretrain_loss.png", "wav2vec 2.0 pretraining (contrastive + diversity loss)")
            v = [x for x in curve if x[0] == "valid"]
            print(f"  pretraining: {time.time() - t_pre:.0f} s this run, valid loss "
                  + " -> ".join(f"{x[2]:.2f}@{x[1]}" for x in v) + f"; curve: {work / 'pretrain_loss.png'}")
    else:
        try:
            pt = shipped.default_model_path()  # sha256 checked
        except ParpFairseqError as e:
            raise SystemExit(f"demo: {e}")
        e = shipped.SHIPPED[shipped.DEFAULT]
        print(f"  the shipped model {shipped.DEFAULT}: {e['parameters'] / 1e6:.2f}M parameters, {e['updates']} "
              f"pretraining updates, sha256 verified ({pt}); docs/pretrained_model.md")
    ft = [f"task.data={en}", f"model.w2v_path={pt}", f"optimization.max_update={args.updates}"]
    # PARP's initial mask is MPI's (the pretrained weights), so PARP does not wait for the dense run:
    # the two train side by side, one thread each; OMP needs the finetuned dense model
    step(f"3/6 dense CTC finetuning on English letters, and PARP at sparsity {s} beside it")
    runs = [("configs/finetune", "mini", work / "dense", ft),
            ("configs/finetune", "mini", work / "parp", [*ft, "pruning=parp", f"model.pruning.sparsity={s}"])]
    if args.jobs > 1:
        dense, parp = train_many(runs, threads=1)
    else:
        dense, parp = (train_many([r])[0] for r in runs)
    step(f"4/6 OMP (mask of the finetuned dense model at sparsity {s}, finetuned from the pretrained init)")
    omp_mask = work / f"omp_{s}.pt"
    if not omp_mask.exists() and mask_cli.main(["omp", "--checkpoint", str(dense), "--sparsity", str(s),
                                                 "--out", str(omp_mask)]) != 0:
        return 2
    omp = train("configs/finetune", "mini", work / "omp", *ft, "pruning=omp", f"model.pruning.mask_path={omp_mask}")

    step("5/6 4-gram KenLM + lexicon from the English text (test sentences held out)")
    lm = work / "lm"
    if not (lm / "lm.bin").exists() and lm_cli.main(["--text", str(en / "lm.txt"), "--out-dir", str(lm),
                                                     "--order", "4", "--dict", str(en / "dict.ltr.txt")]) != 0:
        return 2
    step("6/6 decoding: held-out synthetic speakers (Viterbi, KenLM) and real recordings (LibriVox + Fish Fillets English, KenLM)")
    rows = []
    for name, ck in [("dense", dense), ("omp", omp), ("parp", parp)]:
        vit = decode(ck, en, "test", work / "decode" / name / "test_viterbi")
        klm = decode(ck, en, "test", work / "decode" / name / "test_kenlm", lm)
        real = decode(ck, en, "real", work / "decode" / name / "real_kenlm", lm)
        state = load_checkpoint(ck)  # weights_only, literal config strings
        actual = state["task_state"].get("parp_pruning", {}).get("sparsity", {}).get("global", 0.0)
        rows.append({"method": name, "target_sparsity": s if name != "dense" else 0.0, "actual_sparsity": actual,
                     "test_WER_viterbi": vit["wer"], "test_CER": vit["cer"], "test_WER_kenlm": klm["wer"],
                     "real_WER_kenlm": real["wer"], "real_CER_kenlm": real["cer"], "checkpoint": str(ck)})
        print(f"  {name:6s} ref: {klm['example'][0]}\n  {'':6s} hyp: {klm['example'][1]}")
    cols = list(rows[0])
    with open(work / "results.tsv", "w") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n")
    md = ["| method | target sparsity | actual sparsity | test WER % (Viterbi) | test CER % | test WER % (KenLM) "
          "| real-speech WER % (KenLM) |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['method']} | {r['target_sparsity']:.2f} | {r['actual_sparsity']:.4f} | {r['test_WER_viterbi']:.1f} "
           f"| {r['test_CER']:.1f} | {r['test_WER_kenlm']:.1f} | {r['real_WER_kenlm']:.1f} |" for r in rows]
    (work / "results.md").write_text("\n".join(md) + "\n")
    plot(rows, work / "results.png", s, Path(pt).name)
    print("\n" + "\n".join(md))
    print(f"\nresults: {work / 'results.tsv'}, {work / 'results.md'}, {work / 'results.png'}  "
          f"({time.time() - T0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
