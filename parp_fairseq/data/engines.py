"""Speech synthesis engines and the synthetic speakers made from them.

A :class:`Speaker` is an engine + voice + pitch + rate. Every engine here is deterministic (the same
text and speaker give byte-identical audio) and is converted to 16 kHz mono PCM16 by ``sox -R``:

* ``espeak`` (Debian ``espeak-ng``): every language; timbre = one of espeak-ng's voice variants
  (``+name``), ``-p`` pitch 0-99, ``-s`` words per minute;
* ``flite`` (Debian ``flite``): English, its built-in voices ``kal kal16 awb rms slt``; pitch = the
  intonation target mean in Hz, rate through ``duration_stretch``;
* ``festival`` (Debian ``festival`` + ``festvox-*`` voices): English ``kal_diphone`` /
  ``ked_diphone`` / ``cmu_us_slt_arctic_hts``, Russian ``msu_ru_nsh_clunits``, Italian
  ``lp_diphone`` / ``pc_diphone``; rate through ``Duration_Stretch`` (festival's pitch is the voice's).
"""

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .text import LANGUAGES
from .tools import FESTIVAL_VOICES, CorpusError, require, sox_to_16k

ENGINES = ("espeak", "flite", "festival")
BASE_RATE = 160  # words per minute that a stretch of 1.0 stands for (flite / festival)

# language -> [(engine, voice, Debian package)] beside espeak-ng's variants
EXTRA_VOICES: Dict[str, List[Tuple[str, str, str]]] = {
    "en": [("flite", v, "flite") for v in ("kal", "kal16", "awb", "rms", "slt")]
    + [("festival", "kal_diphone", "festival festvox-kallpc16k"),
       ("festival", "ked_diphone", "festival festvox-kdlpc16k"),
       ("festival", "cmu_us_slt_arctic_hts", "festival festvox-us-slt-hts")],
    "ru": [("festival", "msu_ru_nsh_clunits", "festival festvox-ru")],
    "it": [("festival", "lp_diphone", "festival festvox-italp16k"),
           ("festival", "pc_diphone", "festival festvox-itapc16k")],
}

# festival reads its input in the voice's own encoding: the Italian diphone voices' letter-to-sound
# rules are ISO-8859-1 (UTF-8 text makes them write an empty file); every other voice reads UTF-8
FESTIVAL_ENCODING = {"lp_diphone": "latin-1", "pc_diphone": "latin-1"}


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: ``variant`` is the espeak-ng variant, or the flite / festival voice."""

    id: str
    variant: str
    pitch: int  # espeak-ng -p (0..99); flite: mapped to 80..200 Hz; festival: unused
    rate: int  # words per minute
    engine: str = "espeak"


def voice_variants() -> List[str]:
    """espeak-ng's voice variants (``+name``), sorted: the speaker timbres."""
    r = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    names = [ln.split()[4].split("/")[-1] for ln in r.stdout.splitlines()[1:] if ln.strip()]
    return sorted(set(names))


def check_extra_voices(lang: str) -> List[Tuple[str, str]]:
    """The (engine, voice) pairs of ``lang`` beyond espeak-ng; one clear error naming the apt line
    when an engine or a voice is not installed."""
    out = []
    for engine, voice, pkg in EXTRA_VOICES.get(lang, []):
        if engine == "flite":
            require("flite", pkg, f"for the flite voice {voice!r} of the {lang!r} corpus")
        else:
            require("text2wave", pkg, f"for the festival voice {voice!r} of the {lang!r} corpus")
            if not any(FESTIVAL_VOICES.glob(f"*/{voice}")):
                raise CorpusError(f"the festival voice {voice!r} ({lang!r} corpus) is not installed under "
                                  f"{FESTIVAL_VOICES}; install it with `sudo apt-get install {pkg}`")
        out.append((engine, voice))
    return out


def make_speakers(lang: str, n_train: int, n_test: int, seed: int, variants: Sequence[str],
                  extra: Sequence[Tuple[str, str]] = ()) -> Tuple[List[Speaker], List[Speaker]]:
    """Deterministic ``(train, test)`` speakers: ``n_train`` / ``n_test`` espeak-ng ones, then the extra ones.

    ``extra`` (engine, voice) pairs of flite / festival are mixed in after the espeak-ng speakers
    were drawn (so a corpus without them is unchanged): every third voice goes to the test
    speakers, the rest to training, each at a few pitches / rates."""
    rng = np.random.default_rng([seed, 202, sorted(LANGUAGES).index(lang)])
    picks = rng.permutation(len(variants))
    spk = []
    for i in range(n_train + n_test):
        spk.append(Speaker(f"{lang}{i:03d}", variants[int(picks[i % len(picks)])],
                           int(rng.integers(20, 80)), int(rng.integers(135, 185))))
    train, test = spk[:n_train], spk[n_train:]
    xr = np.random.default_rng([seed, 404, sorted(LANGUAGES).index(lang)])
    for j, (engine, voice) in enumerate(extra):
        held_out = j % 3 == 2
        for k in range(1 if held_out else 3):
            s = Speaker(f"{lang}{engine[:2]}{j:02d}{k}", voice, int(xr.integers(20, 80)),
                        int(xr.integers(135, 185)), engine)
            (test if held_out else train).append(s)
    return train, test


def _flite(text: str, speaker: Speaker, rate: int, tmp: Path) -> None:
    hz = 80 + int(speaker.pitch * 1.2)
    r = subprocess.run(["flite", "-voice", speaker.variant, "--setf", f"duration_stretch={BASE_RATE / rate:.3f}",
                        "--setf", f"int_f0_target_mean={hz}", "-t", text, "-o", str(tmp)], capture_output=True)
    if r.returncode != 0 or not tmp.exists() or tmp.stat().st_size < 100:
        raise CorpusError(f"flite failed on {text!r} (voice {speaker.variant}): {r.stderr.decode(errors='replace')[:300]}")


def _festival(text: str, speaker: Speaker, rate: int, tmp: Path) -> None:
    r = subprocess.run(["text2wave", "-o", str(tmp), "-eval", f"(voice_{speaker.variant})",
                        "-eval", f"(Parameter.set 'Duration_Stretch {BASE_RATE / rate:.3f})"],
                       input=text.encode(FESTIVAL_ENCODING.get(speaker.variant, "utf-8"), errors="replace"),
                       capture_output=True)
    if r.returncode != 0 or not tmp.exists() or tmp.stat().st_size < 100:
        raise CorpusError(f"festival failed on {text!r} (voice {speaker.variant}): {r.stderr.decode(errors='replace')[:300]}")


def synthesize(text: str, voice: str, speaker: Speaker, rate: int, out_path: Path) -> int:
    """``text`` spoken by ``speaker`` -> 16 kHz mono PCM16 ``out_path`` (``voice``: the language's
    espeak-ng voice); returns the number of samples."""
    if speaker.engine == "espeak":
        esp = subprocess.run(
            ["espeak-ng", "-v", f"{voice}+{speaker.variant}", "-p", str(speaker.pitch), "-s", str(rate),
             "--stdout"], input=text.encode("utf-8"), capture_output=True)
        if esp.returncode != 0 or len(esp.stdout) < 100:
            raise CorpusError(f"espeak-ng failed on {text!r} ({voice}): {esp.stderr.decode(errors='replace')[:300]}")
        return sox_to_16k(["-t", "wav", "-"], out_path, stdin=esp.stdout)
    if speaker.engine not in ("flite", "festival"):
        raise CorpusError(f"unknown synthesis engine {speaker.engine!r}; one of {ENGINES}")
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".wav", dir=out_path.parent)
    os.close(fd)
    try:
        (_flite if speaker.engine == "flite" else _festival)(text, speaker, rate, Path(tmp))
        return sox_to_16k([tmp], out_path)
    finally:
        os.unlink(tmp)
