"""``parp-fairseq-corpus``: build and check the offline speech corpus (:mod:`parp_fairseq.data.speech`).

    parp-fairseq-corpus build --out data/small --tier small          # all 11 languages + real speech
    parp-fairseq-corpus build --out data/tiny --tier tiny --langs en nl
    parp-fairseq-corpus build --out data/full --tier full            # + nl_real / cs_real recorded tasks
    parp-fairseq-corpus build --out data/pretrain --tier pretrain    # >= 20 h, flite/festival voices
    parp-fairseq-corpus check data/small/en --labels ltr phn         # manifests, audio, labels
    parp-fairseq-corpus info data/small                              # sizes, hours, speakers
    parp-fairseq-corpus subset data/full/en --hours 0.1667 --out data/full/en_10min   # 10 min of labels
    parp-fairseq-corpus hubert-labels data/full/pretrain --out data/full/km100 --clusters 100
                                     # HuBERT frame labels: MFCC -> k-means (fairseq's simple_kmeans)

A build is resumable: finished languages are kept, an interrupted one is redone from scratch.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from ..data import real_tasks, speech
from ..errors import run_cli


NOT_MANIFESTS = ("speakers.tsv", "utterances.tsv")  # tables beside the manifests


def _hours(tsv: Path) -> float:
    return speech.manifest_hours(tsv) if tsv.exists() else 0.0


def hubert_labels(args) -> int:
    """``<split>.km`` + ``dict.km.txt`` for ``hubert_pretraining`` (task.label_dir, labels=[km], label_rate=100)."""
    from ..data import hubert_labels as hl
    from ..fsutil import output_dir

    if not 2 <= args.clusters <= 10_000:
        raise ValueError(f"--clusters {args.clusters} is out of range; use 2..10000 (fairseq's HuBERT BASE: 100)")
    data = Path(args.data)
    for split in args.splits:
        if not (data / f"{split}.tsv").is_file():
            raise FileNotFoundError(f"{data}/{split}.tsv does not exist; HuBERT labels are made for the manifests "
                                    f"of a pretraining folder (e.g. `parp-fairseq-corpus build` ... /pretrain)")
    feats = {split: hl.features(hl.read_manifest(data / f"{split}.tsv"), f"mfcc {split}") for split in args.splits}
    fit_on = "train" if "train" in feats else args.splits[0]
    print(f"[hubert-labels] k-means ({args.clusters} clusters) on the MFCC frames of {fit_on}")
    km = hl.fit_kmeans(feats[fit_on], args.clusters, args.seed, args.max_frames)
    with output_dir(args.out, "parp-fairseq-corpus hubert-labels") as tmp:
        frames = hl.write_labels(tmp, feats, km)
    print(f"[hubert-labels] wrote {args.out}: " + ", ".join(f"{s}.km ({n} frames)" for s, n in frames.items())
          + f", dict.km.txt; pretrain with task.label_dir={args.out} task.labels=[km] task.label_rate={hl.LABEL_RATE}")
    return 0


def build(args) -> int:
    out = speech.prepare(args.out, args.tier, args.langs, seed=args.seed, jobs=args.jobs, real=not args.no_real)
    if not args.no_check:
        check_all(out)
    info(out)
    return 0


def check_all(root: Path) -> None:
    meta = json.loads((root / "corpus.json").read_text())
    for lang in meta["languages"]:
        d = root / lang
        for split in meta["sizes"][lang]:
            speech.check_manifest(d / f"{split}.tsv")
            for label in ("phn", "ltr"):
                if (d / f"dict.{label}.txt").exists():
                    unk = speech.check_labels(d, split, label, allow_unknown=split == "real")
                    if unk:
                        print(f"[corpus] {lang}/real.{label}: {len(unk)} symbols outside the training inventory "
                              f"(scored as <unk>): {' '.join(unk[:8])}")
    for task in meta.get("real_tasks", []):
        d = root / task
        for split in (*real_tasks.LABELED_SPLITS, "extra"):
            if not (d / f"{split}.tsv").exists():
                continue
            speech.check_manifest(d / f"{split}.tsv")
            for label in ("phn", "ltr"):
                speech.check_labels(d, split, label, allow_unknown=split.startswith("test") or split == "extra")
    for split in ("train", "valid"):
        speech.check_manifest(root / "pretrain" / f"{split}.tsv")
    print(f"[corpus] checked every manifest, audio file and label file under {root}")


def info(root: Path) -> None:
    meta = json.loads((Path(root) / "corpus.json").read_text())
    print(f"corpus {root}: tier {meta['tier']}, seed {meta['seed']}")
    print("| language | train | valid | test | real | train hours | phones |")
    print("|---|---|---|---|---|---|---|")
    for lang in meta["languages"]:
        s = meta["sizes"][lang]
        phones = len((Path(root) / lang / "dict.phn.txt").read_text(encoding="utf-8").splitlines())
        print(f"| {lang} | {s.get('train', 0)} | {s.get('valid', 0)} | {s.get('test', 0)} | {s.get('real', '-')} "
              f"| {_hours(Path(root) / lang / 'train.tsv'):.2f} | {phones} |")
    tasks = meta.get("real_tasks", [])
    if tasks:
        print("\n| real-speech task | " + " | ".join(real_tasks.LABELED_SPLITS + ("extra",)) + " | phones |")
        print("|---|" + "---|" * (len(real_tasks.LABELED_SPLITS) + 2))
        for task in tasks:
            d = Path(root) / task
            cells = []
            for split in real_tasks.LABELED_SPLITS + ("extra",):
                tsv = d / f"{split}.tsv"
                n = len(tsv.read_text(encoding="utf-8").splitlines()) - 1 if tsv.exists() else 0
                cells.append(f"{n} ({_hours(tsv) * 60:.0f} min)" if n else "-")
            phones = len((d / "dict.phn.txt").read_text(encoding="utf-8").splitlines())
            print(f"| {task} | " + " | ".join(cells) + f" | {phones} |")
    if "hours" in meta:
        print(f"\npretraining audio (pretrain/train.tsv): {meta['hours']['pretrain_train']:.2f} h")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="parp-fairseq-corpus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="synthesize (or complete) a corpus")
    b.add_argument("--out", required=True, help="corpus folder (created; a rerun resumes it)")
    b.add_argument("--tier", default="tiny", choices=sorted(speech.TIERS),
                   help="tiny: CI (seconds); small: demo (~1 min); full: ~1,000 utterances per language + the nl/cs "
                        "real-speech tasks (~6 min); pretrain: >= 20 h for pretraining, flite/festival voices too")
    b.add_argument("--langs", nargs="+", metavar="LANG",
                   help=f"languages (default all: {' '.join(sorted(speech.LANGUAGES))}); en is always built")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--jobs", type=int, default=None, help="parallel synthesis processes (default: CPU count)")
    b.add_argument("--no-real", action="store_true", help="skip the recorded-speech 'real' splits")
    b.add_argument("--no-check", action="store_true", help="skip the final check of every file")
    c = sub.add_parser("check", help="check manifests (audio present, 16 kHz mono, lengths) and labels")
    c.add_argument("data", help="a corpus root (with corpus.json) or a folder of manifests")
    c.add_argument("--splits", nargs="+", default=None)
    c.add_argument("--labels", nargs="*", default=None, help="label extensions to check (ltr, phn, wrd)")
    i = sub.add_parser("info", help="sizes, hours and phone inventories")
    i.add_argument("data")
    h = sub.add_parser("hubert-labels", help="HuBERT frame labels: MFCC -> k-means -> <split>.km + dict.km.txt")
    h.add_argument("data", help="folder with the pretraining manifests (<split>.tsv)")
    h.add_argument("--out", required=True, help="label folder to write (task.label_dir)")
    h.add_argument("--clusters", type=int, default=100, help="k-means clusters (HuBERT BASE iteration 1: 100)")
    h.add_argument("--splits", nargs="+", default=["train", "valid"])
    h.add_argument("--seed", type=int, default=1)
    h.add_argument("--max-frames", type=int, default=200_000, help="training frames the k-means is fitted on")
    s = sub.add_parser("subset", help="a low-resource copy of a task: at most --hours of its labelled train audio")
    s.add_argument("data", help="a language / task folder (train.tsv + labels)")
    s.add_argument("--hours", type=float, required=True, help="labelled audio to keep (10 min = 0.1667)")
    s.add_argument("--out", required=True, help="new folder (the other splits and dictionaries are copied)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--split", default="train")
    args = ap.parse_args(argv)
    return run_cli("parp-fairseq-corpus", lambda: _run(args))


def _run(args) -> int:
    if args.cmd == "build":
        return build(args)
    if args.cmd == "hubert-labels":
        return hubert_labels(args)
    if args.cmd == "subset":
        from ..data.manifest import labelled_subset

        labelled_subset(Path(args.data), Path(args.out), args.hours, args.seed, args.split)
        return 0
    if args.cmd == "info":
        info(Path(args.data))
        return 0
    d = Path(args.data)
    if (d / "corpus.json").exists() and args.splits is None:
        check_all(d)
        return 0
    splits = args.splits or sorted(p.stem for p in d.glob("*.tsv") if p.name not in NOT_MANIFESTS)
    for split in splits:
        n = speech.check_manifest(d / f"{split}.tsv")
        for label in args.labels if args.labels is not None else ():
            if label != "wrd":
                speech.check_labels(d, split, label)
        print(f"{d}/{split}.tsv: {n} files ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
