"""``parp-fairseq-pretrained``: the shipped default pretrained wav2vec 2.0 (docs/pretrained_model.md).

    parp-fairseq-pretrained path                 # its path, sha256 verified (model.w2v_path=$(...))
    parp-fairseq-pretrained info                 # architecture, parameters, updates, sha256
    parp-fairseq-pretrained pack CKPT OUT.pt     # a pretraining checkpoint -> fp16, no optimizer state
    parp-fairseq-pretrained pack CKPT parp_fairseq/pretrained/NAME.pt --register NAME   # ship it
"""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .. import pretrained
from ..errors import run_cli
from ..fsutil import atomic_write_text


def _run(args) -> int:
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
    entry = pretrained.pack(args.checkpoint, args.out, fp16=not args.fp32)
    if args.register:
        if Path(args.out).resolve().parent != pretrained.HERE:
            raise ValueError(f"--register ships the file with the package: write it under {pretrained.HERE}")
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
    args = ap.parse_args(argv)
    return run_cli("parp-fairseq-pretrained", lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
