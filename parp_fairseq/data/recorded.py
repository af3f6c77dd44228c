"""Real recorded speech shipped in Debian packages, as labelled utterances.

* Fish Fillets NG dialogue (``fillets-ng-data`` + ``fillets-ng-data-<lang>``): the game's voice
  acting, one Ogg file per dialogue line under ``sound/<level>/<lang>/<dialogue id>.ogg``, its
  transcript in ``script/<level>/dialogs_<lang>.lua`` (English: the dialogue ids' own text). The
  id's font names who speaks: ``font_small`` (the small fish), ``font_big`` (the big fish), any
  other font one of the other characters (statue, parrot, vikings, ...).
  Dutch: ~1,529 lines (~91 min); Czech: ~1,937 lines; English: ~192 lines.
* pocketsphinx-testdata (``pocketsphinx-testdata``): LibriVox and "cards" English utterances.

Nothing here converts audio; :mod:`.tasks` turns recordings into fairseq manifests.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .text import _DIALOG_ID_FONT, fillets_dialogs, normalize
from .tools import CorpusError, POCKETSPHINX, fillets_root

# the Debian package holding each language's Fish Fillets recordings
FILLETS_PACKAGES = {"en": "fillets-ng-data", "nl": "fillets-ng-data-nl", "cs": "fillets-ng-data-cs"}
FISH = {"font_small": "small_fish", "font_big": "big_fish"}


@dataclass(frozen=True)
class Recording:
    """One recorded utterance: ``path`` to the original audio, its normalized transcript, who speaks."""

    utt_id: str
    path: Path
    text: str
    speaker: str  # small_fish | big_fish | other:<character>


def fillets_speakers(root: Optional[Path] = None) -> Dict[str, str]:
    """``{dialogue id: speaker}`` from the fonts of the game's dialogue scripts."""
    root = Path(root) if root is not None else fillets_root()
    out: Dict[str, str] = {}
    for f in sorted((root / "script").glob("*/dialogs_en.lua")) + sorted((root / "script").glob("*/dialogs.lua")):
        for did, font in _DIALOG_ID_FONT.findall(f.read_text(encoding="utf-8", errors="replace")):
            out.setdefault(did, FISH.get(font, "other:" + (font[5:] if font.startswith("font_") else font or "unknown")))
    return out


def fillets_ogg_files(lang: str, root: Optional[Path] = None) -> List[Path]:
    """The Fish Fillets recordings of ``lang``, sorted; one :class:`CorpusError` with the apt line
    when the package holding them is not installed (a cheap check before any work)."""
    root = Path(root) if root is not None else fillets_root()
    oggs = sorted((root / "sound").glob(f"*/{lang}/*.ogg"))
    if not oggs:
        pkg = FILLETS_PACKAGES.get(lang, f"fillets-ng-data-{lang}")
        apt = "fillets-ng-data" + ("" if pkg == "fillets-ng-data" else f" {pkg}")
        raise CorpusError(f"no {lang!r} Fish Fillets recordings under {root}/sound; install them with "
                          f"`sudo apt-get install {apt}`")
    return oggs


def fillets_recordings(lang: str, root: Optional[Path] = None) -> List[Recording]:
    """Every recorded Fish Fillets line in ``lang`` that has a usable transcript, sorted by path."""
    root = Path(root) if root is not None else fillets_root()
    oggs = fillets_ogg_files(lang, root)
    text = fillets_dialogs(lang, root)
    who = fillets_speakers(root)
    out = []
    for p in oggs:
        t = text.get(p.stem)
        s = normalize(t, lang) if t else None
        if s:
            out.append(Recording(f"{p.parent.parent.name}-{p.stem}", p, s, who.get(p.stem, "other:unknown")))
    return out


def pocketsphinx_recordings(root: Path = POCKETSPHINX) -> List[Recording]:
    """pocketsphinx-testdata's LibriVox and cards recordings with their English transcripts."""
    out = []
    for sub, trans, spk in (("librivox", "transcription", "librivox"), ("cards", "cards.transcription", "cards")):
        f = root / sub / trans
        if not f.exists():
            raise CorpusError(f"{f} is missing; install it with `sudo apt-get install pocketsphinx-testdata`")
        for ln in f.read_text().splitlines():
            m = re.match(r"<s>(.*)</s>\s*\((.+)\)", ln.strip())
            if m:
                name = m.group(2).strip()
                s = normalize(m.group(1), "en")
                if s:
                    out.append(Recording(f"{sub}-{name}", root / sub / f"{name}.wav", s, f"{spk}:{name.split('-')[0]}"))
    return out


def real_english(n_fillets: Optional[int] = None) -> List[Recording]:
    """The English real-speech test set: pocketsphinx-testdata + the Fish Fillets English lines."""
    fil = fillets_recordings("en")
    return pocketsphinx_recordings() + (fil if n_fillets is None else fil[:n_fillets])
