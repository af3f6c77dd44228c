"""Real recorded speech as full ASR tasks: ``<out>/<lang>_real/`` for Dutch and Czech.

The Fish Fillets NG dialogue (:mod:`.recorded`) becomes a low-resource task in the spirit of the
papers' H2L setting (about one hour of labelled audio per language):

* ``test_spk``: every line of the characters other than the two fish (statue, parrot, vikings, ...)
  — speakers never heard in training. Czech has ~270 such lines; every recorded Dutch line is one
  of the two fish, so ``nl_real`` has no ``test_spk`` (its ``test`` has held-out sentences only);
* the two fish's lines are grouped by transcript (the same sentence never crosses splits) and split
  by duration: ``test`` (~10 %), ``valid`` (~7 %) and ``train`` up to ``train_hours``; what is left
  over is ``extra`` (unlabelled audio, for pretraining only);
* labels ``.wrd``, ``.ltr`` (letters, WER/CER) and ``.phn`` (espeak-ng IPA of the transcript, PER),
  ``dict.ltr.txt`` / ``dict.phn.txt``, a word -> letters ``lexicon.txt``, ``lm.txt`` (every line of
  the game's dialogue in that language except the test and test_spk transcripts), ``speakers.tsv``
  and ``task.json``.

Layout: ``<lang>_real/wav/<utt id>.wav`` (16 kHz mono PCM16) and the manifests beside it, written to
a temporary folder and renamed when complete.
"""

import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..fsutil import output_dir
from .manifest import write_dict, write_split
from .recorded import Recording, fillets_recordings
from .text import dialog_sentences, fillets_dialogs, letters, normalize, phonemize
from .tools import SAMPLE_RATE, CorpusError, convert_recordings

REAL_TASKS = ("nl", "cs")
LABELED_SPLITS = ("train", "valid", "test", "test_spk")
FISH_SPEAKERS = ("small_fish", "big_fish")


def task_name(lang: str) -> str:
    return f"{lang}_real"


def assign_splits(recs: List[Recording], frames: List[int], seed: int, train_hours: Optional[float],
                  test_frac: float = 0.10, valid_frac: float = 0.07) -> List[str]:
    """The split of each recording (pure; see the module doc). Deterministic in ``seed``."""
    if len(recs) != len(frames):
        raise ValueError(f"{len(recs)} recordings but {len(frames)} frame counts")
    split = ["" for _ in recs]
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, r in enumerate(recs):
        if r.speaker in FISH_SPEAKERS:
            groups[r.text].append(i)
        else:
            split[i] = "test_spk"
    keys = sorted(groups)
    rng = np.random.default_rng([seed, 505])
    rng.shuffle(keys)
    total = sum(frames[i] for k in keys for i in groups[k])
    budget = {"test": test_frac * total, "valid": valid_frac * total}
    used = {"test": 0, "valid": 0, "train": 0}
    train_cap = None if train_hours is None else train_hours * 3600 * SAMPLE_RATE
    for k in keys:
        n = sum(frames[i] for i in groups[k])
        if used["test"] < budget["test"]:
            name = "test"
        elif used["valid"] < budget["valid"]:
            name = "valid"
        elif train_cap is None or used["train"] + n <= train_cap:
            name = "train"
        else:
            name = "extra"
        used[name] = used.get(name, 0) + n
        for i in groups[k]:
            split[i] = name
    return split


def build_real_task(out: Path, lang: str, seed: int = 1, train_hours: Optional[float] = 1.0, jobs: int = 2,
                    limit: Optional[int] = None, log=print) -> Path:
    """Build ``<out>/<lang>_real`` (see the module doc); ``limit`` keeps the first recordings only
    (tests). Returns the task folder."""
    if lang not in REAL_TASKS:
        raise CorpusError(f"no real-speech task for {lang!r}; choose from {list(REAL_TASKS)}")
    recs = fillets_recordings(lang)
    if limit is not None:
        # keep both fish and the other characters in a small task
        fish = [r for r in recs if r.speaker in FISH_SPEAKERS][: max(1, limit - limit // 4)]
        other = [r for r in recs if r.speaker not in FISH_SPEAKERS][: limit // 4]
        recs = sorted(fish + other, key=lambda r: r.utt_id)
    final = Path(out) / task_name(lang)
    log(f"[corpus] {task_name(lang)}: {len(recs)} recorded utterances -> 16 kHz")
    with output_dir(final, "parp-fairseq-corpus") as tmp:
        (tmp / "wav").mkdir()
        kept = convert_recordings([(r.path, tmp / "wav" / f"{r.utt_id}.wav") for r in recs], task_name(lang), jobs, log)
        recs, frames = [recs[i] for i in kept], list(kept.values())
        split = assign_splits(recs, frames, seed, train_hours)
        all_phones: List[str] = []
        meta = {"language": lang, "seed": seed, "train_hours_cap": train_hours, "source": "Fish Fillets NG",
                "splits": {}}
        for name in LABELED_SPLITS + ("extra",):
            idx = [i for i, s in enumerate(split) if s == name]
            if not idx and name in ("test_spk", "extra"):  # Dutch: only the two fish speak
                continue
            texts = [recs[i].text for i in idx]
            phones = phonemize(texts, lang) if texts else []
            all_phones += phones
            write_split(tmp, Path(out), f"{task_name(lang)}/wav", name,
                        [(f"{recs[i].utt_id}.wav", frames[i]) for i in idx], texts, phones, ltr=True)
            meta["splits"][name] = {"utterances": len(idx),
                                    "hours": round(sum(frames[i] for i in idx) / SAMPLE_RATE / 3600, 4),
                                    "speakers": sorted({recs[i].speaker for i in idx})}
        train_phn = (tmp / "train.phn").read_text(encoding="utf-8").splitlines()
        write_dict(tmp / "dict.phn.txt", train_phn, extra=" ".join(all_phones).split())
        ltr = [letters(r.text) for r in recs]
        write_dict(tmp / "dict.ltr.txt", (tmp / "train.ltr").read_text(encoding="utf-8").splitlines(),
                   extra=" ".join(ltr).split())
        words = sorted({w for r in recs for w in r.text.split()})
        (tmp / "lexicon.txt").write_text("".join(f"{w}\t{letters(w)}\n" for w in words), encoding="utf-8")
        held_out = {recs[i].text for i, s in enumerate(split) if s in ("test", "test_spk")}
        lines = fillets_dialogs(lang).values()  # LM text: each line whole and sentence by sentence
        lm = {t for raw in lines for t in [normalize(raw, lang), *dialog_sentences(raw, lang)] if t and t not in held_out}
        (tmp / "lm.txt").write_text("".join(t + "\n" for t in sorted(lm)), encoding="utf-8")
        per_spk: Dict[str, List[int]] = defaultdict(list)
        for i, r in enumerate(recs):
            per_spk[r.speaker].append(i)
        (tmp / "speakers.tsv").write_text("speaker\tutterances\thours\tsplits\n" + "".join(
            f"{spk}\t{len(ix)}\t{sum(frames[i] for i in ix) / SAMPLE_RATE / 3600:.4f}\t"
            f"{','.join(sorted({split[i] for i in ix}))}\n" for spk, ix in sorted(per_spk.items())), encoding="utf-8")
        (tmp / "utterances.tsv").write_text("utt_id\tspeaker\tsplit\tsource\n" + "".join(
            f"{r.utt_id}\t{r.speaker}\t{split[i]}\t{r.path}\n" for i, r in enumerate(recs)), encoding="utf-8")
        (tmp / "task.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    s = meta["splits"]
    log(f"[corpus] {task_name(lang)}: " + ", ".join(f"{k} {v['utterances']} ({v['hours'] * 60:.1f} min)"
                                                    for k, v in s.items()))
    return final
