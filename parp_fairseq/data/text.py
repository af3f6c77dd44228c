"""Text of the corpus: sentence sources, normalization, letters and IPA phones.

* Fish Fillets NG dialogue (Debian ``fillets-ng-data``) for en es fr it nl ru sv (and cs, the
  language of the game's recordings);
* wordfreq word lists (tr, zh) and built-in common-word lists (ky, tt), read as random word
  sequences: their targets are phones;
* phones: espeak-ng's IPA through ``phonemizer`` (language switches removed, no word marks).
"""

import re
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .tools import CorpusError, fillets_root

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


_LUA_STR = r'"((?:[^"\\]|\\.)*)"'
_DIALOG_ID = re.compile(r'dialogId\(\s*"([^"]+)"\s*,\s*"[^"]*"\s*,\s*' + _LUA_STR)
_DIALOG_ID_FONT = re.compile(r'dialogId\(\s*"([^"]+)"\s*,\s*(?:"([^"]*)"|nil)')
_DIALOG_STR = re.compile(r"dialogStr\(\s*" + _LUA_STR + r"\s*\)")


def _unescape(s: str) -> str:
    return s.replace('\\"', '"').replace("\\n", " ").replace("\\\\", "\\")


def fillets_dialogs(lang: str, root: Optional[Path] = None) -> Dict[str, str]:
    """``{dialog id: text}`` of the game's dialogue in ``lang`` (English: the ids' own text)."""
    root = Path(root) if root is not None else fillets_root()
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


def dialog_sentences(line: str, lang: str) -> List[str]:
    """The normalized sentences of one dialogue line (split after . ! ?), unusable ones dropped."""
    return [s for s in (normalize(piece, lang) for piece in re.split(r"(?<=[.!?])\s+", line)) if s]


def sentences(lang: str, n_min: int, seed: int) -> List[str]:
    """At least ``n_min`` distinct normalized sentences of 2-14 words, in a seeded order."""
    source = LANGUAGES[lang][1]
    rng = np.random.default_rng([seed, 101, sorted(LANGUAGES).index(lang)])
    out: List[str] = []
    if source == "fillets":
        raw = fillets_dialogs(lang)
        for key in sorted(raw):
            out += [s for s in dialog_sentences(raw[key], lang) if 2 <= len(s.split()) <= 14]
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


# espeak-ng voices of languages phonemized for their recordings only (not synthesized)
PHONEMIZE_ONLY = {"cs": "cs"}


def espeak_voice(lang: str) -> str:
    """The espeak-ng voice that reads (and phonemizes) ``lang``."""
    if lang in LANGUAGES:
        return LANGUAGES[lang][0]
    if lang in PHONEMIZE_ONLY:
        return PHONEMIZE_ONLY[lang]
    raise CorpusError(f"no espeak-ng voice known for {lang!r}; known: {sorted(LANGUAGES) + sorted(PHONEMIZE_ONLY)}")


def phonemize(texts: Sequence[str], lang: str) -> List[str]:
    """IPA phones of each text (espeak-ng through ``phonemizer``), space separated, no word marks."""
    from phonemizer.backend import EspeakBackend
    from phonemizer.separator import Separator

    import logging

    quiet = logging.getLogger("parp_fairseq.phonemizer")  # its word-count warnings do not apply:
    quiet.setLevel(logging.ERROR)  # we drop word boundaries
    backend = EspeakBackend(espeak_voice(lang), language_switch="remove-flags",
                            preserve_punctuation=False, with_stress=False, logger=quiet)
    out = backend.phonemize(list(texts), separator=Separator(phone=" ", word="|", syllable=""),
                            strip=True, njobs=1)
    return [" ".join(p.replace("|", " ").split()) for p in out]


def letters(text: str) -> str:
    """fairseq ``.ltr``: ``"it's on" -> "i t ' s | o n |"``."""
    return " ".join(" ".join(w) + " |" for w in text.split())


