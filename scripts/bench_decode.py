#!/usr/bin/env python
"""Decoding real-time factor (CPU): Viterbi vs KenLM lexicon beam search (flashlight-text).

RTF = seconds of compute / seconds of audio, measured by ``parp-fairseq-decode`` on the same
emissions (model forward once; search timed per decoder). Appends a section to BENCHMARKS.md.

    python scripts/bench_decode.py --checkpoint exp/demo/parp/checkpoint_last.pt --data exp/demo/data
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parp_fairseq.cli import decode as decode_cli  # noqa: E402
from parp_fairseq.decoding.lm import build as build_lm  # noqa: E402
from parp_fairseq.reporting import update_markdown_section  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--beam", type=int, default=50)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lm = build_lm(str(Path(args.data) / "train.wrd"), f"{tmp}/lm", order=3,
                      dict_path=str(Path(args.data) / "dict.ltr.txt"))
        common = ["--checkpoint", args.checkpoint, "--data", args.data, "--split", args.split, "--cpu"]
        for name, extra in [("warm-up", []), ("viterbi", []),
                            (f"kenlm lexicon beam {args.beam}", ["--decoder", "kenlm", "--lm", str(lm / "lm.bin"),
                                                                 "--lexicon", str(lm / "lexicon.txt"),
                                                                 "--beam", str(args.beam), "--lm-weight", "1",
                                                                 "--word-score", "0"])]:
            out = Path(tmp) / name.split()[0]
            if decode_cli.main([*common, *extra, "--results-dir", str(out)]) != 0:
                return 2
            r = decode_cli.read_summary(out)[0]
            if name != "warm-up":  # the first run pays one-time costs (allocator, caches)
                rows.append((name, r["WER"], r["utts"], float(r["RTF_forward"]), float(r["RTF_search"])))
    cmd = "python scripts/bench_decode.py " + " ".join(sys.argv[1:])
    lines = ["## Decoding real-time factor (CPU)", "", f"`{cmd}`; RTF = compute seconds / audio seconds "
             "(forward = wav2vec 2.0 + CTC head incl. data loading, search = decoder only); one warm-up "
             "decode first, not reported. The demo model is the 2-layer 64-dim one: its forward RTF says "
             "little about a BASE model, the search RTF is what the decoder costs.", "",
             "| decoder | test WER % | utts | RTF forward | RTF search | RTF total |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {w} | {u} | {f:.4f} | {s:.4f} | {f + s:.4f} |" for n, w, u, f, s in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    update_markdown_section(args.out, "bench_decode", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
