"""One error family for bad input: one clear line, never a traceback.

Every error parp_fairseq raises for something the user can fix derives from
:class:`ParpFairseqError`. It is also hydra's ``CompactHydraException``, so ``fairseq-hydra-train``
prints just its message (and exits 1) instead of a traceback; our own commands print
``<prog>: error: <message>`` and exit 2 (1 for a failed write: full disk, read-only folder).
``HYDRA_FULL_ERROR=1`` / ``PARP_FAIRSEQ_TRACEBACK=1`` bring the traceback back for debugging.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List

from hydra.errors import CompactHydraException


class ParpFairseqError(CompactHydraException):
    """Base of every user-facing parp_fairseq error (message = what is wrong and the fix)."""

    exit_code = 2


class InputError(ParpFairseqError, ValueError):
    """A bad setting, argument or file content."""


class MissingFileError(ParpFairseqError, FileNotFoundError):
    """An input file or folder that does not exist."""


class CheckpointError(InputError):
    """A file that cannot be loaded safely as a checkpoint / mask file."""


class OutputError(ParpFairseqError, OSError):
    """An output that cannot be written (or would overwrite what the tool did not write)."""

    exit_code = 1


def describe_os_error(e: OSError, what: str = "") -> str:
    """``'cannot write x.pt: No space left on device'`` style text of an OSError."""
    name = e.filename or what
    reason = e.strerror or str(e)
    return f"{name}: {reason}" if name else reason


def run_cli(prog: str, fn: Callable[[], int], extra: tuple = ()) -> int:
    """Run a command body; bad input / failed writes become one ``prog: error: ...`` line.

    ``extra``: further exception types that this command reports as input errors (exit 2)."""
    try:
        return fn()
    except (ParpFairseqError, ValueError, FileNotFoundError, OSError, *extra) as e:
        if os.environ.get("PARP_FAIRSEQ_TRACEBACK"):
            raise
        if isinstance(e, ParpFairseqError):
            msg, code = str(e), e.exit_code
        elif isinstance(e, (ValueError, FileNotFoundError, *extra)):
            msg, code = str(e), 2
        else:  # disk full, read-only target, a file where a folder should be ...
            msg, code = describe_os_error(e), 1
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def install_excepthook() -> None:
    """Outside hydra (``fairseq-train``, ``fairseq-generate``): print our errors as one line."""
    prev = sys.excepthook
    if getattr(prev, "_parp_fairseq", False):
        return

    def hook(tp, value, tb):
        if isinstance(value, ParpFairseqError) and not os.environ.get("PARP_FAIRSEQ_TRACEBACK"):
            print(f"error: {value}", file=sys.stderr)
            return
        prev(tp, value, tb)

    hook._parp_fairseq = True  # type: ignore[attr-defined]
    sys.excepthook = hook


__all__: List[str] = ["ParpFairseqError", "InputError", "MissingFileError", "CheckpointError", "OutputError",
                      "run_cli", "describe_os_error", "install_excepthook"]
