"""fairseq manifests, label files and dictionaries: writing them and checking them.

A manifest (``<split>.tsv``) is the audio root on line 1, then ``<relative path>\t<samples>``; each
label file (``.wrd .ltr .phn``) has one line per manifest entry; ``dict.<label>.txt`` lists the
symbols by count. The checks name the first bad line and the fix.
"""

from collections import Counter
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from .text import letters
from .tools import SAMPLE_RATE, CorpusError

def write_split(folder: Path, root: Path, prefix: str, split: str, rows: Sequence[Tuple[str, int]],
                texts: Sequence[str], phones: Sequence[str], ltr: bool) -> None:
    """``<split>.tsv`` (paths ``<prefix>/<name>`` under ``root``), ``.wrd``, ``.phn`` and, with ``ltr``,
    fairseq letters ``.ltr`` into ``folder``."""
    (folder / f"{split}.tsv").write_text(
        str(root) + "\n" + "".join(f"{prefix}/{name}\t{n}\n" for name, n in rows), encoding="utf-8")
    (folder / f"{split}.wrd").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    (folder / f"{split}.phn").write_text("".join(p + "\n" for p in phones), encoding="utf-8")
    if ltr:
        (folder / f"{split}.ltr").write_text("".join(letters(t) + "\n" for t in texts), encoding="utf-8")


def manifest_hours(tsv: Path) -> float:
    """Hours of audio listed in a manifest."""
    rows = Path(tsv).read_text(encoding="utf-8").splitlines()[1:]
    return sum(int(r.split("\t")[1]) for r in rows) / SAMPLE_RATE / 3600


def write_dict(path: Path, lines: Iterable[str], extra: Iterable[str] = ()) -> None:
    """fairseq dictionary: symbols by descending count (ties by symbol); ``extra`` symbols at 0."""
    counts: Counter = Counter()
    for ln in lines:
        counts.update(ln.split())
    for sym in extra:
        counts.setdefault(sym, 0)
    path.write_text("".join(f"{s} {c}\n" for s, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                    encoding="utf-8")


def _read_lines(path: Path, what: str) -> List[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); {what} must be UTF-8") from None
    except FileNotFoundError:
        raise CorpusError(f"{path} does not exist") from None


def check_manifest(tsv, max_files: Optional[int] = None) -> int:
    """Check a fairseq audio manifest: root folder, every file present, readable audio, 16 kHz mono,
    non-empty, and the frame counts as listed. Returns the number of files; raises
    :class:`CorpusError` naming the first problem and the fix."""
    import soundfile as sf

    tsv = Path(tsv)
    lines = _read_lines(tsv, "a manifest")
    if not lines:
        raise CorpusError(f"{tsv} is empty; a manifest starts with the audio root folder")
    root = Path(lines[0].strip())
    if not root.is_dir():
        raise CorpusError(f"{tsv}: root folder {root} (line 1) does not exist; regenerate the manifest "
                          "or fix its first line")
    n = 0
    for ln_no, ln in enumerate(lines[1:], start=2):
        if max_files is not None and n >= max_files:
            break
        parts = ln.split("\t")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise CorpusError(f"{tsv}:{ln_no}: expected '<relative path>\\t<num samples>', got {ln!r}")
        if int(parts[1]) == 0:
            raise CorpusError(f"{tsv}:{ln_no}: {parts[0]} has 0 samples; remove zero-length audio from the manifest")
        path = root / parts[0]
        if not path.exists():
            raise CorpusError(f"{tsv}:{ln_no}: audio file {path} is missing")
        try:
            info = sf.info(str(path))
        except Exception as e:  # soundfile.LibsndfileError: not audio, truncated header ...
            raise CorpusError(f"{tsv}:{ln_no}: {path} is not readable audio ({str(e).splitlines()[0][:120]}); "
                              f"re-create it as 16 kHz mono WAV/FLAC") from None
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise CorpusError(
                f"{tsv}:{ln_no}: {path} is {info.samplerate} Hz with {info.channels} channel(s); wav2vec 2.0 "
                f"needs 16 kHz mono: convert with `sox {path.name} -r 16000 -c 1 out.wav`")
        if info.frames != int(parts[1]):
            raise CorpusError(f"{tsv}:{ln_no}: {path} has {info.frames} samples, the manifest says {parts[1]}")
        n += 1
    return n


def check_label_file(tsv: Path, label_path: Path, symbols: Optional[Iterable[str]] = None,
                     allow_unknown: bool = False) -> List[str]:
    """One label line per manifest entry, UTF-8, and (with ``symbols``) only dictionary symbols.
    Returns the unknown symbols (raises unless ``allow_unknown``)."""
    n_audio = len(_read_lines(tsv, "a manifest")) - 1
    if not label_path.exists():
        raise CorpusError(f"{label_path} does not exist: every manifest {tsv.name} needs its label file")
    labels = _read_lines(label_path, "label files")
    if len(labels) != n_audio:
        raise CorpusError(f"{label_path} has {len(labels)} lines for the {n_audio} audio files of {tsv}; "
                          f"one transcript line per manifest entry")
    if symbols is None:
        return []
    unknown = sorted({s for ln in labels for s in ln.split()} - set(symbols))
    if unknown and not allow_unknown:
        raise CorpusError(f"{label_path} uses {len(unknown)} symbol(s) missing from the dictionary: {unknown[:10]}; "
                          f"fairseq would silently map them to <unk>. Add them to the dict file (and retrain) "
                          f"or fix the labels")
    return unknown


def check_labels(data: Path, split: str, label: str, allow_unknown: bool = False) -> List[str]:
    """Labels have one line per manifest entry and only dictionary symbols (``allow_unknown``: the
    real-speech splits, whose transcripts may hold phones the synthetic training data never has;
    fairseq maps them to ``<unk>`` and they count as errors). Returns the unknown symbols."""
    symbols = {ln.split()[0] for ln in _read_lines(data / f"dict.{label}.txt", "dictionaries") if ln.strip()}
    return check_label_file(data / f"{split}.tsv", data / f"{split}.{label}", symbols, allow_unknown)


LABEL_EXTS = ("wrd", "ltr", "phn", "km")


def labelled_subset(src: Path, out: Path, hours: float, seed: int = 1, split: str = "train",
                    log=print) -> Tuple[int, float]:
    """A low-resource copy of the task in ``src`` (the 10-minute / 1-hour label settings of the papers):
    ``out/<split>.tsv`` and its label files keep a seeded random subset of ``src/<split>`` of at most
    ``hours`` of audio (at least one utterance); every other file (other splits, dictionaries, lexicon,
    LM text, speaker tables) is copied unchanged, so the output layer is the same as with all labels.
    Manifests keep their audio root: no audio is copied. Returns (utterances, hours) of the subset."""
    import json
    import shutil

    import numpy as np

    from ..fsutil import output_dir

    src, out = Path(src), Path(out)
    if not hours > 0:
        raise ValueError(f"--hours {hours}: the labelled audio to keep must be > 0 hours")
    tsv = src / f"{split}.tsv"
    lines = _read_lines(tsv, "a manifest")
    if len(lines) < 2:
        raise CorpusError(f"{tsv} lists no audio; build the corpus with parp-fairseq-corpus build")
    rows = lines[1:]
    labels = {ext: _read_lines(src / f"{split}.{ext}", "label files") for ext in LABEL_EXTS
              if (src / f"{split}.{ext}").exists()}
    for ext, lab in labels.items():
        if len(lab) != len(rows):
            raise CorpusError(f"{src}/{split}.{ext} has {len(lab)} lines for {len(rows)} manifest entries")
    total = sum(int(r.split("\t")[1]) for r in rows) / SAMPLE_RATE / 3600
    if hours >= total:
        raise ValueError(f"--hours {hours:g} is not below the {total:.3f} h of {tsv}: nothing to leave out")
    keep, acc = [], 0.0
    for i in np.random.default_rng(seed).permutation(len(rows)):
        h = int(rows[i].split("\t")[1]) / SAMPLE_RATE / 3600
        if keep and acc + h > hours:
            continue
        keep.append(int(i))
        acc += h
    keep.sort()  # manifest order, so labels stay aligned and runs are reproducible
    with output_dir(out, "parp-fairseq-corpus subset") as tmp:
        for p in sorted(src.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.name.split(".")[0] != split:
                shutil.copy2(p, tmp / p.name)
        (tmp / f"{split}.tsv").write_text(lines[0] + "\n" + "".join(rows[i] + "\n" for i in keep), encoding="utf-8")
        for ext, lab in labels.items():
            (tmp / f"{split}.{ext}").write_text("".join(lab[i] + "\n" for i in keep), encoding="utf-8")
        (tmp / "subset.json").write_text(json.dumps(
            {"source": str(src.resolve()), "split": split, "hours_asked": hours, "hours": round(acc, 4),
             "utterances": len(keep), "of": len(rows), "seed": seed}, indent=1) + "\n", encoding="utf-8")
    log(f"[corpus] {out}: {split} = {len(keep)} of {len(rows)} utterances, {acc * 60:.1f} min of "
        f"{total * 60:.1f} (seed {seed}); other splits and dictionaries as in {src}")
    return len(keep), acc
