"""An offline multilingual speech corpus in fairseq manifest format.

Synthesized speech (espeak-ng, ``sox -R`` for bit-exact resampling) in eleven languages, in the
spirit of the CommonVoice high-to-low-resource setting of the PARP paper:

* English with letter targets (``.ltr``, WER) and phones (``.phn``);
* es fr it ky nl ru sv tr tt and Mandarin (``cmn-latn-pinyin``) with IPA phone targets (``.phn``,
  PER), phonemized by espeak-ng itself (through ``phonemizer``).

Every language has its own speakers (espeak-ng voice variant, pitch and rate); the ``test`` split is
spoken only by held-out speakers and uses held-out sentences. Real recorded speech is added as a
``real`` split so that every model is also scored on real speech:

* ``nl/real``: the Dutch dialogue of Fish Fillets NG (Debian ``fillets-ng-data-nl``, 2 speakers,
  transcripts joined from the game's ``dialogs_nl.lua`` files);
* ``en/real``: LibriVox and "cards" utterances of Debian ``pocketsphinx-testdata``.

Layout of ``<out>`` (one folder per language, a pretraining manifest over all of them)::

    <lang>/{train,valid,test[,real]}.{tsv,wrd,phn[,ltr]}   fairseq manifests (root line = <out>)
    <lang>/dict.phn.txt [dict.ltr.txt lexicon.txt lm.txt]  dictionaries; English letter lexicon
    <lang>/wav/<split>/<id>.wav                            16 kHz mono PCM16
    <lang>/speakers.tsv                                    who spoke what (voice, pitch, rate)
    pretrain/{train,valid}.tsv                             every language's train / valid audio
    corpus.json                                            tier, seed, languages, sizes, tool versions

Every stage writes to a temporary folder and renames it when complete, so an interrupted run
leaves no half-written language behind and a rerun resumes with the languages still missing.
The same seed gives byte-identical files.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_write_text, check_output_dir, output_dir

SAMPLE_RATE = 16000
FILLETS = Path("/usr/share/games/fillets-ng")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")

# language -> (espeak-ng voice, text source)
LANGUAGES: Dict[str, Tuple[str, str]] = {
    "en": ("en-us", "fillets"),
    "es": ("es", "fillets"),
    "fr": ("fr-fr", "fillets"),
    "it": ("it", "fillets"),
    "ky": ("ky", "words"),
    "nl": ("nl", "fillets"),
    "ru": ("ru", "fillets"),
    "sv": ("sv", "fillets"),
    "tr": ("tr", "wordfreq"),
    "tt": ("tt", "words"),
    "zh": ("cmn-latn-pinyin", "wordfreq"),
}

# Common words for the languages without a sentence source here (wordfreq falls back to Russian
# for ky and tt). Sentences are random word sequences: the targets are phones, read by espeak-ng.
_WORDS = {
    "ky": """бир эки үч төрт беш алты жети сегиз тогуз он жыйырма отуз кырк элүү жүз миң мен сен
        ал биз силер алар үй суу нан эне ата бала кыз уул китеп мектеп жакшы жаман чоң кичине ак
        кара кызыл көк сары тоо көл жол шаар айыл күн ай жыл бүгүн эртең кечээ эмне ким кайда
        качан келет барат окуйт жазат сүйлөйт иштейт жашайт билет көрөт берет алат тамак чай эт
        сүт ат кой уй ит мышык терезе эшик дос мугалим окуучу жер асман шамал кар жамгыр""",
    "tt": """бер ике өч дүрт биш алты җиде сигез тугыз ун егерме утыз кырык илле йөз мең мин син
        ул без сез алар өй су икмәк әни әти бала кыз малай китап мәктәп яхшы начар зур кечкенә ак
        кара кызыл зәңгәр сары тау күл юл шәһәр авыл көн ай ел бүген иртәгә кичә нәрсә кем кайда
        кайчан килә бара укый яза сөйли эшли яши белә күрә бирә ала аш чәй ит сөт ат сарык сыер
        эт мәче тәрәзә ишек дус укытучы укучы җир күк җил кар яңгыр""",
}


@dataclass(frozen=True)
class Tier:
    """Corpus size: utterances per split and language, speakers per language."""

    name: str
    en: Tuple[int, int, int]  # train, valid, test utterances for English
    other: Tuple[int, int, int]  # the same for every other language
    train_speakers: int
    test_speakers: int
    real_nl: Optional[int]  # Dutch real-speech utterances (None = all 1,528)


TIERS = {
    "tiny": Tier("tiny", (12, 4, 4), (8, 2, 2), 4, 2, 8),
    "small": Tier("small", (800, 60, 60), (120, 20, 20), 16, 4, 120),
    "full": Tier("full", (1000, 100, 100), (1000, 100, 100), 40, 8, None),
}
SPLITS = ("train", "valid", "test")


class CorpusError(InputError, RuntimeError):
    """Bad input or a missing tool: the message says what and how to fix it."""


# ----------------------------------------------------------------------------------------------
# tools
def check_tools() -> Dict[str, str]:
    """Versions of espeak-ng and sox; a clear error when one is missing."""
    out = {}
    for tool, flag in (("espeak-ng", "--version"), ("sox", "--version")):
        if shutil.which(tool) is None:
            raise CorpusError(
                f"{tool} is not installed; it is needed to synthesize the corpus. Install it with "
                f"`sudo apt-get install espeak-ng sox` (Debian/Ubuntu) or `brew install espeak-ng sox`."
            )
        r = subprocess.run([tool, flag], capture_output=True, text=True)
        out[tool] = (r.stdout or r.stderr).strip().splitlines()[0]
    return out


def voice_variants() -> List[str]:
    """espeak-ng's voice variants (``+name``), sorted: the speaker timbres."""
    r = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    names = [ln.split()[4].split("/")[-1] for ln in r.stdout.splitlines()[1:] if ln.strip()]
    return sorted(set(names))


# ----------------------------------------------------------------------------------------------
# text
_LUA_STR = r'"((?:[^"\\]|\\.)*)"'
_DIALOG_ID = re.compile(r'dialogId\(\s*"([^"]+)"\s*,\s*"[^"]*"\s*,\s*' + _LUA_STR)
_DIALOG_STR = re.compile(r"dialogStr\(\s*" + _LUA_STR + r"\s*\)")


def _unescape(s: str) -> str:
    return s.replace('\\"', '"').replace("\\n", " ").replace("\\\\", "\\")


def fillets_dialogs(lang: str, root: Path = FILLETS) -> Dict[str, str]:
    """``{dialog id: text}`` of the game's dialogue in ``lang`` (English: the ids' own text)."""
    files = sorted((root / "script").glob(f"*/dialogs_{lang}.lua"))
    if not files:
        raise CorpusError(
            f"no Fish Fillets dialogue for {lang!r} under {root}/script; install it with "
            "`sudo apt-get install fillets-ng-data`"
        )
    out: Dict[str, str] = {}
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        if lang == "en":
            out.update((i, _unescape(t)) for i, t in _DIALOG_ID.findall(text))
            continue
        # dialogId(...) then dialogStr(...) of its translation
        for m in _DIALOG_ID.finditer(text):
            s = _DIALOG_STR.search(text, m.end())
            nxt = _DIALOG_ID.search(text, m.end())
            if s and (nxt is None or s.start() < nxt.start()):
                out[m.group(1)] = _unescape(s.group(1))
    return out


def normalize(text: str, lang: str) -> Optional[str]:
    """Lower-case words without punctuation; None for text with digits or Latin letters in a
    non-Latin language (espeak-ng would read them in another language)."""
    text = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    if any(ch.isdigit() for ch in text):
        return None
    keep = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "LM" or (ch == "'" and lang in ("en", "fr", "it")):
            keep.append(ch)
        else:
            keep.append(" ")
    words = "".join(keep).split()
    if lang == "en":
        if any(re.search(r"[^a-z']", w) for w in words):
            return None
        words = [w.strip("'") for w in words if w.strip("'")]
    if lang in ("ru", "ky", "tt") and any(re.search(r"[a-z]", w) for w in words):
        return None
    return " ".join(words) or None


def sentences(lang: str, n_min: int, seed: int) -> List[str]:
    """At least ``n_min`` distinct normalized sentences of 2-14 words, in a seeded order."""
    source = LANGUAGES[lang][1]
    rng = np.random.default_rng([seed, 101, sorted(LANGUAGES).index(lang)])
    out: List[str] = []
    if source == "fillets":
        raw = fillets_dialogs(lang)
        for key in sorted(raw):
            for piece in re.split(r"(?<=[.!?])\s+", raw[key]):
                s = normalize(piece, lang)
                if s and 2 <= len(s.split()) <= 14:
                    out.append(s)
        out = sorted(set(out))
        rng.shuffle(out)
    else:
        if source == "wordfreq":
            try:
                import wordfreq
            except ImportError as e:  # pragma: no cover - a dependency
                raise CorpusError("wordfreq is missing: pip install wordfreq") from e
            code = "zh" if lang == "zh" else lang
            vocab = [w for w in wordfreq.top_n_list(code, 3000) if w.isalpha()][:1500]
        else:
            vocab = _WORDS[lang].split()
        seen = set()
        while len(out) < max(n_min, 1):
            k = int(rng.integers(2, 8))
            s = " ".join(rng.choice(vocab, size=k))
            if s not in seen:
                seen.add(s)
                out.append(s)
    if len(out) < n_min:
        # fillets text is finite: reuse sentences with other speakers
        out = (out * (n_min // len(out) + 1))[: max(n_min, len(out))]
    return out


def phonemize(texts: Sequence[str], lang: str) -> List[str]:
    """IPA phones of each text (espeak-ng through ``phonemizer``), space separated, no word marks."""
    from phonemizer.backend import EspeakBackend
    from phonemizer.separator import Separator

    import logging

    quiet = logging.getLogger("parp_fairseq.phonemizer")  # its word-count warnings do not apply:
    quiet.setLevel(logging.ERROR)  # we drop word boundaries
    backend = EspeakBackend(LANGUAGES[lang][0], language_switch="remove-flags",
                            preserve_punctuation=False, with_stress=False, logger=quiet)
    out = backend.phonemize(list(texts), separator=Separator(phone=" ", word="|", syllable=""),
                            strip=True, njobs=1)
    return [" ".join(p.replace("|", " ").split()) for p in out]


def letters(text: str) -> str:
    """fairseq ``.ltr``: ``"it's on" -> "i t ' s | o n |"``."""
    return " ".join(" ".join(w) + " |" for w in text.split())


# ----------------------------------------------------------------------------------------------
# audio
@dataclass(frozen=True)
class Speaker:
    id: str
    variant: str
    pitch: int  # espeak-ng -p, 0..99
    rate: int  # espeak-ng -s, words per minute


def make_speakers(lang: str, n_train: int, n_test: int, seed: int, variants: Sequence[str]) -> List[Speaker]:
    """Deterministic speakers; the last ``n_test`` are the held-out test speakers."""
    rng = np.random.default_rng([seed, 202, sorted(LANGUAGES).index(lang)])
    picks = rng.permutation(len(variants))
    spk = []
    for i in range(n_train + n_test):
        spk.append(Speaker(f"{lang}{i:03d}", variants[int(picks[i % len(picks)])],
                           int(rng.integers(20, 80)), int(rng.integers(135, 185))))
    return spk


def synthesize(text: str, voice: str, speaker: Speaker, rate: int, out_path: Path) -> int:
    """espeak-ng ``text`` -> 16 kHz mono PCM16 ``out_path`` (sox -R: repeatable); returns samples."""
    esp = subprocess.run(
        ["espeak-ng", "-v", f"{voice}+{speaker.variant}", "-p", str(speaker.pitch), "-s", str(rate),
         "--stdout"], input=text.encode("utf-8"), capture_output=True)
    if esp.returncode != 0 or len(esp.stdout) < 100:
        raise CorpusError(f"espeak-ng failed on {text!r} ({voice}): {esp.stderr.decode()[:300]}")
    return _sox_to_16k(["-t", "wav", "-"], out_path, stdin=esp.stdout)


def _sox_to_16k(src: List[str], out_path: Path, stdin: Optional[bytes] = None) -> int:
    r = subprocess.run(["sox", "-R", "-V1", *src, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                        "-e", "signed-integer", str(out_path)], input=stdin, capture_output=True)
    if r.returncode != 0:
        raise CorpusError(f"sox could not convert {src[-1]} -> {out_path}: {r.stderr.decode()[:300]}")
    import soundfile as sf

    return sf.info(str(out_path)).frames


def _parallel(fn, items: Sequence, desc: str, jobs: int) -> List:
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        return list(tqdm(ex.map(fn, items), total=len(items), desc=desc, unit="utt", leave=False,
                         mininterval=1.0, disable=None))


# ----------------------------------------------------------------------------------------------
# manifests
def write_dict(path: Path, lines: Iterable[str], extra: Iterable[str] = ()) -> None:
    """fairseq dictionary: symbols by descending count (ties by symbol); ``extra`` symbols at 0."""
    counts: Counter = Counter()
    for ln in lines:
        counts.update(ln.split())
    for sym in extra:
        counts.setdefault(sym, 0)
    path.write_text("".join(f"{s} {c}\n" for s, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                    encoding="utf-8")


def _write_split(tmp: Path, root: Path, lang: str, split: str, rows: List[Tuple[str, int]],
                 texts: List[str], phones: List[str]) -> None:
    (tmp / f"{split}.tsv").write_text(
        str(root) + "\n" + "".join(f"{lang}/wav/{split}/{name}\t{n}\n" for name, n in rows), encoding="utf-8")
    (tmp / f"{split}.wrd").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    (tmp / f"{split}.phn").write_text("".join(p + "\n" for p in phones), encoding="utf-8")
    if lang == "en":
        (tmp / f"{split}.ltr").write_text("".join(letters(t) + "\n" for t in texts), encoding="utf-8")


def build_language(out: Path, lang: str, tier: Tier, seed: int, variants: Sequence[str], jobs: int) -> Path:
    """Synthesize one language into ``out/<lang>`` (temp folder, renamed when complete)."""
    voice = LANGUAGES[lang][0]
    sizes = tier.en if lang == "en" else tier.other
    spk = make_speakers(lang, tier.train_speakers, tier.test_speakers, seed, variants)
    train_spk, test_spk = spk[: tier.train_speakers], spk[tier.train_speakers:]
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
        frames = _parallel(lambda j: synthesize(j[1], voice, j[2], j[3], j[0]), jobs_list,
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
            _write_split(tmp, out, lang, split, rows, texts, phones)
        write_dict(tmp / "dict.phn.txt", (tmp / "train.phn").read_text(encoding="utf-8").splitlines(),
                   extra=" ".join(all_phones).split())
        (tmp / "speakers.tsv").write_text(
            "speaker\tvoice\tvariant\tpitch\trate\tsplits\n" + "".join(
                f"{s.id}\t{voice}\t{s.variant}\t{s.pitch}\t{s.rate}\t{'test' if s in test_spk else 'train,valid'}\n"
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
    sound = FILLETS / "sound"
    oggs = sorted(sound.glob("*/nl/*.ogg"))
    if not oggs:
        raise CorpusError(f"no Dutch recordings under {sound}; install them with "
                          "`sudo apt-get install fillets-ng-data-nl fillets-ng-data`")
    text = fillets_dialogs("nl")
    pairs = []
    for p in oggs:
        t = text.get(p.stem)
        s = normalize(t, "nl") if t else None
        if s:
            pairs.append((p, s))
    return pairs if n is None else pairs[:n]


def pocketsphinx_real() -> List[Tuple[Path, str]]:
    """(wav, English transcript) pairs of pocketsphinx-testdata's LibriVox and cards recordings."""
    pairs = []
    for sub, trans in (("librivox", "transcription"), ("cards", "cards.transcription")):
        f = POCKETSPHINX / sub / trans
        if not f.exists():
            raise CorpusError(f"{f} is missing; install it with `sudo apt-get install pocketsphinx-testdata`")
        for ln in f.read_text().splitlines():
            m = re.match(r"<s>(.*)</s>\s*\((.+)\)", ln.strip())
            if m:
                pairs.append((POCKETSPHINX / sub / f"{m.group(2).strip()}.wav", " ".join(m.group(1).split())))
    return pairs


def add_real_split(out: Path, lang: str, pairs: List[Tuple[Path, str]], jobs: int) -> None:
    """Convert recordings to 16 kHz mono and write ``<lang>/real.*``: the audio folder first (built in
    a temporary folder, then moved), then each manifest / label file atomically."""
    d = out / lang
    names = [f"{i:05d}_{p.stem}.wav" for i, (p, _) in enumerate(pairs)]
    with output_dir(d / "wav" / "real", "parp-fairseq-corpus") as tmp:
        frames = _parallel(lambda j: _sox_to_16k([str(j[0])], tmp / j[1]),
                           [(p, nm) for (p, _), nm in zip(pairs, names)], f"real {lang}", jobs)
    texts = [t for _, t in pairs]
    files = {"real.tsv": str(out) + "\n" + "".join(f"{lang}/wav/real/{nm}\t{n}\n" for nm, n in zip(names, frames)),
             "real.wrd": "".join(t + "\n" for t in texts),
             "real.phn": "".join(p + "\n" for p in phonemize(texts, lang))}
    if lang == "en":
        files["real.ltr"] = "".join(letters(t) + "\n" for t in texts)
    for name in [n for n in files if n != "real.tsv"] + ["real.tsv"]:  # the manifest last: it marks completion
        atomic_write_text(d / name, files[name])


def write_pretrain_manifest(out: Path, langs: Sequence[str]) -> Path:
    """``pretrain/{train,valid}.tsv``: the train / valid audio of every language (stock
    ``audio_pretraining`` reads them)."""
    legacy = ("train.tsv", "valid.tsv") if (out / "corpus.json").exists() else None
    with output_dir(out / "pretrain", "parp-fairseq-corpus", adopt=legacy) as tmp:
        for split in ("train", "valid"):
            rows = []
            for lang in langs:
                rows += (out / lang / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
            (tmp / f"{split}.tsv").write_text(str(out) + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return out / "pretrain"


# ----------------------------------------------------------------------------------------------
# checks
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
    for lang in langs:
        if (out / lang / "dict.phn.txt").exists():
            log(f"[corpus] {lang}: done before")
            continue
        log(f"[corpus] {lang}: synthesizing {t.en if lang == 'en' else t.other} utterances "
            f"({LANGUAGES[lang][0]}, {t.train_speakers}+{t.test_speakers} speakers)")
        build_language(out, lang, t, seed, variants, jobs)
    if real:
        for lang, pairs_fn in (("en", pocketsphinx_real), ("nl", lambda: fillets_real(t.real_nl))):
            if lang in langs and not (out / lang / "real.tsv").exists():
                pairs = pairs_fn()
                log(f"[corpus] {lang}: {len(pairs)} real recorded utterances -> {lang}/real")
                add_real_split(out, lang, pairs, jobs)
    write_pretrain_manifest(out, langs)
    sizes = {lang: {sp: len((out / lang / f"{sp}.tsv").read_text().splitlines()) - 1
                    for sp in (*SPLITS, "real") if (out / lang / f"{sp}.tsv").exists()} for lang in langs}
    meta.update(languages=langs, sizes=sizes)
    atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return out
