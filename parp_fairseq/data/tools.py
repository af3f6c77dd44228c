"""External tools and data packages of the corpus: where they live, their versions, and one clear
error with the ``apt-get`` line when one is missing. Audio conversion (``sox -R``: repeatable) and a
threaded map with a tqdm bar live here too."""

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import InputError

SAMPLE_RATE = 16000
MIN_SAMPLES = SAMPLE_RATE // 10  # recordings shorter than 0.1 s (a few of the game's files are empty) are left out
FILLETS = Path("/usr/share/games/fillets-ng")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
FESTIVAL_VOICES = Path("/usr/share/festival/voices")
FILLETS_ENV = "PARP_FAIRSEQ_FILLETS"  # the game's data elsewhere (another distribution, a build of its own)


def fillets_root() -> Path:
    """Where Fish Fillets NG's data lives: ``$PARP_FAIRSEQ_FILLETS`` or Debian's folder."""
    return Path(os.environ.get(FILLETS_ENV) or FILLETS)


class CorpusError(InputError, RuntimeError):
    """Bad input or a missing tool: the message says what and how to fix it."""


def require(tool: str, package: str, why: str) -> str:
    """Path of ``tool``; a :class:`CorpusError` with the apt line when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        raise CorpusError(f"{tool} is not installed; it is needed {why}. Install it with "
                          f"`sudo apt-get install {package}` (Debian/Ubuntu)")
    return path


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


def sox_to_16k(src: List[str], out_path: Path, stdin: Optional[bytes] = None, effects: Sequence[str] = ()) -> int:
    """Convert ``src`` (sox input arguments) to 16 kHz mono PCM16 ``out_path``; returns its samples."""
    r = subprocess.run(["sox", "-R", "-V1", *src, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                        "-e", "signed-integer", str(out_path), *effects], input=stdin, capture_output=True)
    if r.returncode != 0:
        raise CorpusError(f"sox could not convert {src[-1]} -> {out_path}: {r.stderr.decode(errors='replace')[:300]}")
    import soundfile as sf

    return sf.info(str(out_path)).frames


def parallel(fn, items: Sequence, desc: str, jobs: int) -> List:
    """``[fn(x) for x in items]`` on ``jobs`` threads (the work is in subprocesses), with a tqdm bar."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        return list(tqdm(ex.map(fn, items), total=len(items), desc=desc, unit="utt", leave=False,
                         mininterval=1.0, disable=None))


def convert_recordings(pairs: Sequence[Tuple[Path, Path]], desc: str, jobs: int, log=None) -> Dict[int, int]:
    """Convert each ``(source, destination)`` recording to 16 kHz mono PCM16 (:func:`sox_to_16k`).

    Recordings shorter than :data:`MIN_SAMPLES` are deleted again (and reported through ``log``).
    Returns ``{index in pairs: samples}`` of the recordings kept, in order."""
    frames = parallel(lambda j: sox_to_16k([str(j[0])], j[1]), pairs, desc, jobs)
    kept: Dict[int, int] = {}
    for i, n in enumerate(frames):
        if n >= MIN_SAMPLES:
            kept[i] = n
            continue
        Path(pairs[i][1]).unlink()
        if log is not None:
            log(f"[corpus] {desc}: skipped {pairs[i][0]} ({n} samples, under {MIN_SAMPLES})")
    return kept
