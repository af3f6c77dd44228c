"""``parp-fairseq-pretrained``: the shipped default pretrained wav2vec 2.0 (docs/pretrained_model.md).

    parp-fairseq-pretrained path                 # its path, sha256 verified (model.w2v_path=$(...))
    parp-fairseq-pretrained info                 # architecture, parameters, updates, sha256
    parp-fairseq-pretrained pack CKPT OUT.pt     # a pretraining checkpoint -> fp16, no optimizer state
    parp-fairseq-pretrained pack CKPT parp_fairseq/pretrained/NAME.pt --register NAME   # ship it
    parp-fairseq-pretrained curve LOG [LOG ...] --out curve.png   # loss / accuracy of a pretraining run
"""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .. import pretrained
from ..errors import run_cli
from ..fsutil import atomic_write_text


def curve(logs, out) -> list:
    """Loss and contrastive accuracy of the fairseq pretraining ``logs`` (in order: resumed runs
    continue the update count) as a two-panel PNG; returns the valid points ``[(updates, loss, acc)]``."""
    from ..reporting import fairseq_log_curve, pyplot

    loss, acc = [], []
    for log in logs:
        loss += fairseq_log_curve(log, "loss")
        acc += fairseq_log_curve(log, "accuracy")
    if not loss:
        raise ValueError(f"no fairseq train_inner / valid lines in {', '.join(map(str, logs))}")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, pts, label in ((axes[0], loss, "loss (contrastive + diversity + penalty)"),
                           (axes[1], acc, "contrastive accuracy")):
        for split, style in (("train", "-"), ("valid", "o--")):
            xy = sorted((u, v) for s, u, v in pts if s == split)
            if xy:
                ax.plot([u for u, _ in xy], [v for _, v in xy], style, label=split, markersize=3)
        ax.set_xlabel("updates")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    from ..fsutil import atomic_write

    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    va = {u: v for s, u, v in acc if s == "valid"}
    return [(u, v, va.get(u)) for s, u, v in sorted(loss, key=lambda x: x[1]) if s == "valid"]


def _run(args) -> int:
    if args.cmd == "curve":
        pts = curve(args.logs, args.out)
        print("| updates | valid loss | valid accuracy |\n|---|---|---|")
        for u, v, a in pts:
            print(f"| {u} | {v:.3f} | {a:.3f} |" if a is not None else f"| {u} | {v:.3f} | - |")
        print(f"curve: {args.out}")
        return 0
    if args.cmd == "path":
        print(pretrained.verify(args.name))
        return 0
    if args.cmd == "info":
        path = pretrained.verify(args.name)
        e = pretrained.SHIPPED[args.name]
        print(f"{args.name}: {path} ({e['bytes'] / 2**20:.1f} MiB, {e['dtype']}), sha256 {e['sha256']} (verified)")
        print(f"  {e['parameters'] / 1e6:.2f}M parameters, {e['updates']} pretraining updates")
        for k, v in e["architecture"].items():
            print(f"  {k}: {v}")
        return 0
    if args.register and Path(args.out).resolve().parent != pretrained.HERE:
        raise ValueError(f"--register ships the file with the package: write it under {pretrained.HERE}")
    entry = pretrained.pack(args.checkpoint, args.out, fp16=not args.fp32)
    if args.register:
        reg = dict(pretrained.SHIPPED)
        reg[args.register] = entry
        atomic_write_text(pretrained.REGISTRY, json.dumps(reg, indent=1, sort_keys=True) + "\n")
    print(json.dumps(entry, indent=1, sort_keys=True))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="parp-fairseq-pretrained", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("path", "print the verified path of a shipped model"),
                           ("info", "what a shipped model is")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--name", default=pretrained.DEFAULT, help=f"shipped model (default {pretrained.DEFAULT})")
    p = sub.add_parser("pack", help="write a pretraining checkpoint as a small shippable file")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16 storage)")
    p.add_argument("--register", metavar="NAME", help="record it in the package's shipped.json under NAME")
    c = sub.add_parser("curve", help="plot the loss / accuracy curve of a pretraining run from its logs")
    c.add_argument("logs", nargs="+", help="fairseq training logs (hydra_train.log or stdout), in run order")
    c.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args(argv)
    return run_cli("parp-fairseq-pretrained", lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
