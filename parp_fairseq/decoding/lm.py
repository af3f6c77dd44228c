"""``parp-fairseq-lm``: an n-gram KenLM (ARPA + binary) and a letter lexicon from corpus text.

    bash scripts/build_kenlm.sh          # once: lmplz / build_binary from the PyPI kenlm sources
    parp-fairseq-lm --text data/train.wrd --out-dir data/lm --order 3 --dict data/dict.ltr.txt

Writes ``lm.arpa``, ``lm.bin`` and ``lexicon.txt`` (``word<TAB>w o r d |``) into ``--out-dir``,
atomically; a rerun with the same inputs and options does nothing (``lm.json`` records them).
Small corpora need ``--discount_fallback`` (always passed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import run_cli
from ..fsutil import atomic_write_text, check_output_dir, output_dir

LM_FILES = ("lm.arpa", "lm.bin", "lexicon.txt", "lm.json")  # what this command writes
REPO_TOOLS = Path(__file__).resolve().parents[2] / "tools" / "kenlm" / "bin"


def kenlm_bin(name: str) -> str:
    """Path of a KenLM tool: $KENLM_BIN, then tools/kenlm/bin of the checkout, then PATH."""
    for d in filter(None, [os.environ.get("KENLM_BIN"), str(REPO_TOOLS)]):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"KenLM's {name} not found (looked in $KENLM_BIN, {REPO_TOOLS}, PATH); "
                            f"build it with `bash scripts/build_kenlm.sh`")


def letter_lexicon(words, tgt_dict_path: Optional[str] = None) -> str:
    """wav2letter lexicon text of ``words`` spelled in letters, ``|`` as word end."""
    allowed = None
    if tgt_dict_path:
        allowed = {ln.split()[0] for ln in Path(tgt_dict_path).read_text().splitlines() if ln.strip()}
    lines, skipped = [], []
    for w in sorted(set(words)):
        if allowed is not None and not set(w) <= allowed:
            skipped.append(w)
            continue
        lines.append(f"{w}\t{' '.join(w)} |")
    if skipped:
        print(f"[lm] {len(skipped)} word(s) have letters outside the dictionary and were left out of "
              f"the lexicon, e.g. {skipped[:5]}", file=sys.stderr)
    return "\n".join(lines) + "\n"


def _line_id(line: str) -> str:
    """What ``lm.json`` records of a held-out line: a short hash of it, stripped (not the sentence)."""
    return hashlib.sha1(line.strip().encode("utf-8")).hexdigest()[:16]


def _held_lines(exclude: Sequence[str]) -> "set[str]":
    """The stripped, non-empty lines of the ``exclude`` files (transcripts to keep out of the LM)."""
    held = set()
    for e in exclude:
        if not Path(e).is_file():
            raise FileNotFoundError(f"--exclude {e!r} does not exist; give transcripts, one per line (e.g. valid.wrd)")
        held |= {ln.strip() for ln in Path(e).read_text(encoding="utf-8").splitlines() if ln.strip()}
    return held


def _without(text: str, held: "set[str]") -> "tuple[str, int]":
    lines = text.splitlines()
    kept = [ln for ln in lines if ln.strip() not in held]
    return "".join(ln + "\n" for ln in kept), len(lines) - len(kept)


def held_out_lines(text: str, exclude: Sequence[str]) -> "tuple[str, int]":
    """``text`` without its lines that are a line of one of the ``exclude`` files (compared stripped):
    the transcripts of a split that LM weights are tuned on must not be in the LM. Returns ``(text,
    number of lines left out)``."""
    return _without(text, _held_lines(exclude))


def lines_seen_by_lm(lm_path, lines: Sequence[str]) -> Optional[int]:
    """How many of ``lines`` (transcripts, e.g. of the split LM weights are tuned on) were in the text
    the LM at ``lm_path`` was built from, as ``lm.json`` beside it records it (its ``--text`` less the
    ``--exclude`` lines). None when that cannot be told: an LM not built by this command, or its text
    moved or changed since (its sha1 is checked in the same pass that reads it)."""
    try:
        rec = json.loads((Path(lm_path).parent / "lm.json").read_text())
        text, want_sha1 = Path(rec["source_text"]), rec["source_sha1"]
        held = set(rec.get("held_out", []))
        want = {ln.strip() for ln in lines if ln.strip() and _line_id(ln) not in held}
        seen, h = set(), hashlib.sha1()
        with open(text, "rb") as f:
            for raw in f:
                h.update(raw)
                ln = raw.decode("utf-8").strip()
                if ln in want:
                    seen.add(ln)
    except (OSError, ValueError, KeyError, TypeError):  # no / foreign lm.json, text gone or not UTF-8
        return None
    return len(seen) if h.hexdigest() == want_sha1 else None


def build(text: str, out_dir: str, order: int = 3, dict_path: Optional[str] = None, prune: str = "",
          exclude: Sequence[str] = ()) -> Path:
    """An ``order``-gram KenLM (``lm.arpa``, ``lm.bin``) and a letter ``lexicon.txt`` of its words in
    ``out_dir``, from ``text`` without the lines of the ``exclude`` files."""
    text_p = Path(text)
    if not text_p.is_file():
        raise FileNotFoundError(f"LM text {text!r} does not exist")
    if order < 2:
        raise ValueError(f"--order {order}: flashlight's KenLM rejects unigram models; use >= 2")
    raw = text_p.read_bytes()  # read once: the LM's text and the sha1 lm.json records of it
    corpus = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text's universal newlines
    held = _held_lines(exclude)
    if exclude:
        corpus, left_out = _without(corpus, held)
        print(f"[lm] left out {left_out} line(s) of {text} that are in {', '.join(exclude)}", flush=True)
    words = corpus.split()
    if not words:
        raise ValueError(f"LM text {text!r} is empty" + (" once the --exclude lines are left out" if exclude else ""))
    out = Path(out_dir)
    check_output_dir(out, "parp-fairseq-lm", adopt=LM_FILES)  # before the work
    key = {"text_sha1": hashlib.sha1(corpus.encode()).hexdigest(), "order": order, "prune": prune,
           "dict": Path(dict_path).read_text() if dict_path else None}
    # where the text came from and which lines were held out (hashed): lets `parp-fairseq-sweep collect
    # --tune-on valid` check that the LM never saw the sentences its weights are tuned on
    provenance = {"source_text": str(text_p.resolve()), "source_sha1": hashlib.sha1(raw).hexdigest(),
                  "held_out": sorted(_line_id(ln) for ln in held)}
    meta = out / "lm.json"
    if meta.exists() and all((out / f).exists() for f in ("lm.arpa", "lm.bin", "lexicon.txt")):
        old = json.loads(meta.read_text())
        if {k: old.get(k) for k in key} == key:
            if {k: old.get(k) for k in provenance} != provenance:
                atomic_write_text(meta, json.dumps({**key, **provenance}))
            print(f"[lm] up to date: {out}")
            return out
    lmplz, build_binary = kenlm_bin("lmplz"), kenlm_bin("build_binary")
    with output_dir(out, "parp-fairseq-lm", adopt=LM_FILES) as tmp:
        cmd = [lmplz, "-o", str(order), "--discount_fallback", "-S", "20%", "-T", str(tmp)]
        if prune:
            cmd += ["--prune", *prune.split()]
        print(f"[lm] {' '.join(cmd)} < {text}", flush=True)
        source = text_p
        if exclude:
            source = tmp / "lm_text.txt"
            source.write_text(corpus, encoding="utf-8")
        with open(source, "rb") as fin, open(tmp / "lm.arpa", "wb") as fout:
            r = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(f"lmplz failed: {r.stderr.decode()[-1500:]}")
        r = subprocess.run([build_binary, str(tmp / "lm.arpa"), str(tmp / "lm.bin")], capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"build_binary failed: {r.stderr.decode()[-1500:]}")
        (tmp / "lexicon.txt").write_text(letter_lexicon(words, dict_path))
        (tmp / "lm.json").write_text(json.dumps({**key, **provenance}))
        if exclude:
            source.unlink()
    print(f"[lm] wrote {out}/lm.arpa, lm.bin, lexicon.txt ({len(set(words))} words, order {order})")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="parp-fairseq-lm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="one sentence per line (e.g. train.wrd)")
    ap.add_argument("--out-dir", required=True, help="new or empty folder, or an earlier --out-dir of this command")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--dict", help="dict.ltr.txt: only words spellable in it enter the lexicon")
    ap.add_argument("--prune", default="", help="lmplz --prune thresholds, e.g. '0 0 1'")
    ap.add_argument("--exclude", nargs="+", default=[], metavar="FILE",
                    help="transcripts to keep out of the LM (lines of --text equal to one of theirs are left out), "
                         "e.g. valid.wrd to tune --lm-weight / --word-score on valid with an LM that never saw it")
    args = ap.parse_args(argv)

    def body() -> int:
        build(args.text, args.out_dir, args.order, args.dict, args.prune, args.exclude)
        return 0

    return run_cli("parp-fairseq-lm", body, extra=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
