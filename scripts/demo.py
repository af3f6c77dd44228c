#!/usr/bin/env python
"""The one-command demo: tiny wav2vec 2.0 pretrain -> dense finetune -> OMP / MPI / PARP pruning.

Everything runs on CPU through the real fairseq loops (``fairseq-hydra-train``): a synthetic tone
corpus is generated, a 2-layer wav2vec 2.0 is pretrained with stock ``audio_pretraining``,
finetuned with CTC, pruned with each method at one sparsity, decoded greedily on the held-out
test speakers, and a results table is written (TSV + markdown). Finished steps are skipped.

    python scripts/demo.py --workdir exp/demo --sparsity 0.5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parp_fairseq._compat import hydra_train_cmd  # noqa: E402
from parp_fairseq.cli import decode as decode_cli  # noqa: E402
from parp_fairseq.cli import export as export_cli  # noqa: E402
from parp_fairseq.cli import mask as mask_cli  # noqa: E402
from parp_fairseq.data.tones import make_tone_corpus  # noqa: E402


def step(msg: str) -> None:
    print(f"\n=== [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train(config_dir: str, name: str, save_dir: Path, *overrides: str) -> Path:
    ckpt = save_dir / "checkpoint_last.pt"
    if (save_dir / "DONE").exists():
        print(f"  (done before: {ckpt})")
        return ckpt
    cmd = hydra_train_cmd(REPO / config_dir, name, save_dir, *overrides)
    print("  $ " + " ".join(cmd), flush=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        for line in p.stdout:  # fairseq's own progress lines
            if "][train_inner]" in line or "][valid]" in line or "Error" in line:
                print("  " + line.split("] - ", 1)[-1].rstrip()[:200], flush=True)
    if p.returncode != 0:
        raise SystemExit(f"training failed (exit {p.returncode}); full log in {save_dir}/hydra")
    (save_dir / "DONE").touch()
    return ckpt


def evaluate(ckpt: Path, data: Path, out: Path, split: str = "test") -> dict:
    """Viterbi decoding with parp-fairseq-decode; returns its summary row."""
    if decode_cli.main(["--checkpoint", str(ckpt), "--data", str(data), "--split", split,
                        "--results-dir", str(out)]) != 0:
        raise SystemExit(f"decoding {ckpt} failed")
    hdr, row = [ln.split("\t") for ln in (out / "summary.tsv").read_text().splitlines()[:2]]
    r = dict(zip(hdr, row))
    ref, hyp = (out / "ref.word").read_text().splitlines()[0], (out / "hypo.word").read_text().splitlines()[0]
    return {"wer": float(r["WER"]), "cer": float(r["CER"]), "example": (ref, hyp)}


def main() -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    for name in ("fairseq", "parp_fairseq"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="exp/demo")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--updates", type=int, default=400, help="finetuning updates per method")
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    step("1/6 tone corpus (train 300 / valid 40 / test 40 utterances, test = unseen speakers)")
    data = make_tone_corpus(work / "data", sizes={"train": 300, "valid": 40, "test": 40})
    print(f"  {data}")
    step("2/6 pretrain a tiny wav2vec 2.0 with stock audio_pretraining")
    pt = train("configs/pretrain", "tiny", work / "pretrain", f"task.data={data}", "optimization.max_update=300")
    ft = [f"task.data={data}", f"model.w2v_path={pt}", f"optimization.max_update={args.updates}",
          "optimization.lr=[0.002]", "dataset.validate_interval_updates=100", "checkpoint.save_interval_updates=100"]
    step("3/6 dense CTC finetuning")
    dense = train("configs/finetune", "tiny", work / "dense", *ft)
    step(f"4/6 OMP: mask of the finetuned model at sparsity {args.sparsity}, applied at the pretrained init")
    omp_mask = work / f"omp_{args.sparsity}.pt"
    if not omp_mask.exists() and mask_cli.main(["omp", "--checkpoint", str(dense), "--sparsity",
                                                 str(args.sparsity), "--out", str(omp_mask)]) != 0:
        return 2
    omp = train("configs/finetune", "tiny", work / "omp", *ft, "pruning=omp", f"model.pruning.mask_path={omp_mask}")
    step("5/6 MPI and PARP")
    mpi = train("configs/finetune", "tiny", work / "mpi", *ft, "pruning=mpi", f"model.pruning.sparsity={args.sparsity}")
    parp = train("configs/finetune", "tiny", work / "parp", *ft, "pruning=parp",
                 f"model.pruning.sparsity={args.sparsity}", "model.pruning.reprune_interval=20")
    export_cli.main([str(parp), str(work / "parp_stock.pt")])

    step("6/6 Viterbi decoding of the test speakers (parp-fairseq-decode)")
    rows = []
    for name, ck in [("dense", dense), ("omp", omp), ("mpi", mpi), ("parp", parp)]:
        r = evaluate(ck, data, work / "decode" / name)
        state = torch.load(ck, map_location="cpu", weights_only=True)
        actual = state["task_state"].get("parp_pruning", {}).get("sparsity", {}).get("global", 0.0)
        rows.append((name, args.sparsity if name != "dense" else 0.0, actual, r["wer"], r["cer"], str(ck)))
        print(f"  {name:6s} {r['example'][0]}  ->  {r['example'][1]}")
    header = ("method", "target_sparsity", "actual_sparsity", "test_WER", "test_CER", "checkpoint")
    with open(work / "results.tsv", "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in r) + "\n")
    md = ["| method | target sparsity | actual sparsity | test WER % | test CER % |", "|---|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]:.2f} | {r[2]:.4f} | {r[3]:.1f} | {r[4]:.1f} |" for r in rows]
    (work / "results.md").write_text("\n".join(md) + "\n")
    print("\n" + "\n".join(md))
    print(f"\nresults: {work / 'results.tsv'}, {work / 'results.md'}  ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
