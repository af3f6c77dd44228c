"""The offline multilingual speech corpus in fairseq manifest format: tiers and the build.

Synthesized speech in eleven languages, in the spirit of the CommonVoice high-to-low-resource
setting of the PARP paper, plus real recorded speech:

* English with letter targets (``.ltr``, WER) and phones (``.phn``); es fr it ky nl ru sv tr tt and
  Mandarin (``cmn-latn-pinyin``) with IPA phone targets (``.phn``, PER);
* every language has its own speakers (:mod:`.engines`: espeak-ng variants, and in the ``pretrain``
  tier flite / festival voices); ``test`` is spoken only by held-out speakers and uses held-out
  sentences;
* ``real`` test splits of recorded speech: ``en/real`` (pocketsphinx-testdata LibriVox/cards + the
  Fish Fillets English lines), ``nl/real`` (the Fish Fillets Dutch dialogue);
* real-speech ASR tasks ``nl_real`` and ``cs_real`` (:mod:`.real_tasks`, ``full`` / ``pretrain`` tiers).

The pieces live in their own modules: :mod:`.tools` (external tools, sox), :mod:`.text` (sentences,
normalization, phones), :mod:`.engines` (synthesis, speakers), :mod:`.recorded` (Debian's
recordings), :mod:`.real_tasks`, :mod:`.manifest` (writing and checking manifests and labels).

Layout of ``<out>`` (one folder per language, a pretraining manifest over all of them)::

    <lang>/{train,valid,test[,real]}.{tsv,wrd,phn[,ltr]}   fairseq manifests (root line = <out>)
    <lang>/dict.phn.txt [dict.ltr.txt lexicon.txt lm.txt]  dictionaries; English letter lexicon
    <lang>/wav/<split>/<id>.wav                            16 kHz mono PCM16
    <lang>/speakers.tsv                                    who spoke what (engine, voice, pitch, rate)
    <nl|cs>_real/{train,valid,test,test_spk,extra}.*       real-speech tasks (see real_tasks)
    pretrain/{train,valid}.tsv                             unlabelled audio of every language
    corpus.json                                            tier, seed, languages, sizes, tool versions

Every stage writes to a temporary folder and renames it when complete, so an interrupted run
leaves no half-written language behind and a rerun resumes with the languages still missing.
The same seed gives byte-identical files.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..fsutil import atomic_write_text, check_output_dir, output_dir
from .engines import Speaker, check_extra_voices, make_speakers, synthesize, voice_variants  # noqa: F401
from .manifest import (check_label_file, check_labels, check_manifest, manifest_hours,  # noqa: F401
                       write_dict, write_split)
from .real_tasks import REAL_TASKS, build_real_task, task_name
from .recorded import fillets_ogg_files, fillets_recordings, pocketsphinx_recordings
from .text import LANGUAGES, fillets_dialogs, letters, normalize, phonemize, sentences  # noqa: F401
from .tools import (FILLETS, POCKETSPHINX, SAMPLE_RATE, CorpusError, check_tools,  # noqa: F401
                    convert_recordings, parallel, sox_to_16k)


@dataclass(frozen=True)
class Tier:
    """Corpus size: utterances per split and language, speakers per language, real speech."""

    name: str
    en: Tuple[int, int, int]  # train, valid, test utterances for English
    other: Tuple[int, int, int]  # the same for every other language
    train_speakers: int
    test_speakers: int
    real_nl: Optional[int]  # Dutch real-speech utterances in nl/real (None = all ~1,520)
    real_en_fillets: Optional[int] = 0  # Fish Fillets English lines in en/real beside pocketsphinx (None = all)
    extra_voices: bool = False  # flite / festival speakers beside espeak-ng (en, ru, it)
    real_tasks: Tuple[str, ...] = ()  # nl_real / cs_real ASR tasks
    real_task_limit: Optional[int] = None  # recordings per real task (None = all; tests use a few)
    real_task_hours: Optional[float] = 1.0  # training audio cap of a real task


TIERS = {
    "tiny": Tier("tiny", (12, 4, 4), (8, 2, 2), 4, 2, 8, 4, False, REAL_TASKS, 16),
    "small": Tier("small", (800, 60, 60), (120, 20, 20), 16, 4, 120, None),
    "full": Tier("full", (1000, 100, 100), (1000, 100, 100), 40, 8, None, None, False, REAL_TASKS),
    # >= 20 h of audio for pretraining: ~18 h synthesized (espeak-ng, flite, festival) + every recording
    # (measured: 20.47 h in pretrain/train.tsv; 2,400 other-language utterances gave 19.80 h)
    "pretrain": Tier("pretrain", (3000, 100, 100), (2500, 100, 100), 60, 8, None, None, True, REAL_TASKS),
}
SPLITS = ("train", "valid", "test")


def build_language(out: Path, lang: str, tier: Tier, seed: int, variants: Sequence[str], jobs: int) -> Path:
    """Synthesize one language into ``out/<lang>`` (temp folder, renamed when complete)."""
    voice = LANGUAGES[lang][0]
    sizes = tier.en if lang == "en" else tier.other
    extra = check_extra_voices(lang) if tier.extra_voices else ()
    train_spk, test_spk = make_speakers(lang, tier.train_speakers, tier.test_speakers, seed, variants, extra)
    spk = train_spk + test_spk
    # held-out sentences for test: a tenth of the pool (at least the test size) is test-only
    pool = sentences(lang, sum(sizes), seed)
    n_test_pool = max(sizes[2], len(pool) // 10)
    test_pool, train_pool = pool[:n_test_pool], pool[n_test_pool:] or pool[:n_test_pool]
    rng = np.random.default_rng([seed, 303, sorted(LANGUAGES).index(lang)])
    final = out / lang
    with output_dir(final, "parp-fairseq-corpus") as tmp:
        jobs_list = []
        plan: Dict[str, List[Tuple[str, str, Speaker, int]]] = {}
        for split, n in zip(SPLITS, sizes):
            (tmp / "wav" / split).mkdir(parents=True)
            src, speakers = (test_pool, test_spk) if split == "test" else (train_pool, train_spk)
            # train takes sentences in pool order (reusing them with other speakers when the pool
            # is smaller); valid takes them from the end of the train pool
            idx = np.arange(n) % len(src) if split != "valid" else (len(src) - 1 - np.arange(n)) % len(src)
            plan[split] = []
            for i in range(n):
                s = speakers[int(rng.integers(len(speakers)))]
                rate = int(round(s.rate * rng.uniform(0.9, 1.1)))
                name = f"{s.id}_{split}_{i:05d}.wav"
                plan[split].append((name, src[int(idx[i])], s, rate))
                jobs_list.append((tmp / "wav" / split / name, src[int(idx[i])], s, rate))
        frames = parallel(lambda j: synthesize(j[1], voice, j[2], j[3], j[0]), jobs_list,
                           f"synth {lang}", jobs)
        k = 0
        all_phones: List[str] = []
        for split in SPLITS:
            rows, texts = [], []
            for name, text, _, _ in plan[split]:
                rows.append((name, frames[k]))
                texts.append(text)
                k += 1
            phones = phonemize(texts, lang)
            all_phones += phones
            write_split(tmp, out, f"{lang}/wav/{split}", split, rows, texts, phones, ltr=lang == "en")
        write_dict(tmp / "dict.phn.txt", (tmp / "train.phn").read_text(encoding="utf-8").splitlines(),
                   extra=" ".join(all_phones).split())
        (tmp / "speakers.tsv").write_text(
            "speaker\tengine\tvoice\tvariant\tpitch\trate\tsplits\n" + "".join(
                f"{s.id}\t{s.engine}\t{voice if s.engine == 'espeak' else s.variant}\t{s.variant}\t{s.pitch}\t{s.rate}\t"
                f"{'test' if s in test_spk else 'train,valid'}\n"
                for s in spk), encoding="utf-8")
        if lang == "en":
            ltr = [ln for sp in SPLITS for ln in (tmp / f"{sp}.ltr").read_text().splitlines()]
            write_dict(tmp / "dict.ltr.txt", (tmp / "train.ltr").read_text().splitlines(),
                       extra=" ".join(ltr).split())
            words = sorted({w for sp in SPLITS for ln in (tmp / f"{sp}.wrd").read_text().splitlines()
                            for w in ln.split()})
            (tmp / "lexicon.txt").write_text("".join(f"{w}\t{letters(w)}\n" for w in words))
            # LM text: every English sentence that is not a test/real transcript
            test_set = set(test_pool)
            lm = [s for s in pool if s not in test_set]
            (tmp / "lm.txt").write_text("".join(s + "\n" for s in sorted(set(lm))))
    return final



def fillets_real(n: Optional[int]) -> List[Tuple[Path, str]]:
    """(ogg, Dutch transcript) pairs of the recorded Fish Fillets dialogue, sorted by path."""
    pairs = [(r.path, r.text) for r in fillets_recordings("nl")]
    return pairs if n is None else pairs[:n]


def english_real(n_fillets: Optional[int]) -> List[Tuple[Path, str]]:
    """(audio, transcript) pairs of the English real test set: pocketsphinx-testdata's LibriVox and
    cards recordings, then ``n_fillets`` Fish Fillets English lines (None = all ~190)."""
    recs = pocketsphinx_recordings()
    if n_fillets != 0:
        fil = fillets_recordings("en")
        recs += fil if n_fillets is None else fil[:n_fillets]
    return [(r.path, r.text) for r in recs]


def add_real_split(out: Path, lang: str, pairs: List[Tuple[Path, str]], jobs: int, log=print) -> None:
    """Convert recordings to 16 kHz mono and write ``<lang>/real.*``: the audio folder first (built in
    a temporary folder, then moved), then each manifest / label file atomically."""
    d = out / lang
    names = [f"{i:05d}_{p.stem}.wav" for i, (p, _) in enumerate(pairs)]
    with output_dir(d / "wav" / "real", "parp-fairseq-corpus") as tmp:
        kept = convert_recordings([(p, tmp / nm) for (p, _), nm in zip(pairs, names)], f"real {lang}", jobs, log)
    pairs, names, frames = [pairs[i] for i in kept], [names[i] for i in kept], list(kept.values())
    texts = [t for _, t in pairs]
    files = {"real.tsv": str(out) + "\n" + "".join(f"{lang}/wav/real/{nm}\t{n}\n" for nm, n in zip(names, frames)),
             "real.wrd": "".join(t + "\n" for t in texts),
             "real.phn": "".join(p + "\n" for p in phonemize(texts, lang))}
    if lang == "en":
        files["real.ltr"] = "".join(letters(t) + "\n" for t in texts)
    for name in [n for n in files if n != "real.tsv"] + ["real.tsv"]:  # the manifest last: it marks completion
        atomic_write_text(d / name, files[name])


def write_pretrain_manifest(out: Path, langs: Sequence[str], real_tasks: Sequence[str] = ()) -> Path:
    """``pretrain/{train,valid}.tsv``: the train / valid audio of every language and, of each real
    task, its train + extra (train) and valid audio; never a test split (stock ``audio_pretraining``
    reads them)."""
    legacy = ("train.tsv", "valid.tsv") if (out / "corpus.json").exists() else None
    real = [task_name(t) for t in real_tasks]
    with output_dir(out / "pretrain", "parp-fairseq-corpus", adopt=legacy) as tmp:
        for split in ("train", "valid"):
            rows = []
            for lang in langs:
                rows += (out / lang / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
            for task in real:
                for part in (("train", "extra") if split == "train" else ("valid",)):
                    if (out / task / f"{part}.tsv").exists():
                        rows += (out / task / f"{part}.tsv").read_text(encoding="utf-8").splitlines()[1:]
            (tmp / f"{split}.tsv").write_text(str(out) + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return out / "pretrain"


# ----------------------------------------------------------------------------------------------
def prepare(out, tier: str = "tiny", langs: Optional[Sequence[str]] = None, seed: int = 1,
            jobs: Optional[int] = None, real: bool = True, log=print) -> Path:
    """Build (or complete) the corpus; finished languages are kept (resumable, idempotent)."""
    if tier not in TIERS:
        raise CorpusError(f"unknown tier {tier!r}; choose one of {sorted(TIERS)}")
    langs = list(langs or sorted(LANGUAGES))
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        raise CorpusError(f"unknown language(s) {unknown}; choose from {sorted(LANGUAGES)}")
    if "en" not in langs:
        langs.insert(0, "en")
    tools = check_tools()
    out = Path(out).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise CorpusError(f"cannot write to {out} ({e.strerror}); choose a writable --out folder") from e
    meta_path = out / "corpus.json"
    meta = {"tier": tier, "seed": seed, "sample_rate": SAMPLE_RATE, "tools": tools}
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
            assert isinstance(old, dict) and "tier" in old
        except (ValueError, AssertionError, OSError):
            raise CorpusError(f"{meta_path} exists but is not a parp-fairseq-corpus record; {out} is not a corpus "
                              f"folder of this tool: give another --out") from None
        if (old.get("tier"), old.get("seed")) != (tier, seed):
            raise CorpusError(f"{out} holds a {old.get('tier')!r} corpus with seed {old.get('seed')}; "
                              f"use another --out for tier {tier!r} seed {seed}")
        langs = sorted(set(langs) | set(old.get("languages", [])))
    # refuse folders that are not this tool's before synthesizing anything (nothing is replaced
    # that parp-fairseq-corpus did not write; a corpus of an earlier version has an unmarked pretrain/)
    check_output_dir(out / "pretrain", "parp-fairseq-corpus", adopt=("train.tsv", "valid.tsv") if meta_path.exists() else None)
    for lang in langs:
        if not (out / lang / "dict.phn.txt").exists():
            check_output_dir(out / lang, "parp-fairseq-corpus")
    jobs = jobs or os.cpu_count() or 1
    t = TIERS[tier]
    variants = voice_variants()
    if real:
        if t.real_tasks:
            for task in t.real_tasks:  # a missing recordings package: one error before any work
                fillets_ogg_files(task)
        pocketsphinx_recordings()
        if t.real_en_fillets != 0:
            fillets_ogg_files("en")
    for lang in langs:
        if (out / lang / "dict.phn.txt").exists():
            log(f"[corpus] {lang}: done before")
            continue
        log(f"[corpus] {lang}: synthesizing {t.en if lang == 'en' else t.other} utterances "
            f"({LANGUAGES[lang][0]}, {t.train_speakers}+{t.test_speakers} speakers)")
        build_language(out, lang, t, seed, variants, jobs)
    if real:
        for lang, pairs_fn in (("en", lambda: english_real(t.real_en_fillets)), ("nl", lambda: fillets_real(t.real_nl))):
            if lang in langs and not (out / lang / "real.tsv").exists():
                pairs = pairs_fn()
                log(f"[corpus] {lang}: {len(pairs)} real recorded utterances -> {lang}/real")
                add_real_split(out, lang, pairs, jobs, log)
    tasks = [task for task in t.real_tasks if real]
    for task in tasks:
        if not (out / task_name(task) / "task.json").exists():
            build_real_task(out, task, seed, t.real_task_hours, jobs, t.real_task_limit, log=log)
    write_pretrain_manifest(out, langs, tasks)
    sizes = {lang: {sp: len((out / lang / f"{sp}.tsv").read_text().splitlines()) - 1
                    for sp in (*SPLITS, "real") if (out / lang / f"{sp}.tsv").exists()} for lang in langs}
    meta.update(languages=langs, sizes=sizes, real_tasks=[task_name(task) for task in tasks],
                hours={"pretrain_train": round(manifest_hours(out / "pretrain" / "train.tsv"), 3)})
    atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return out
