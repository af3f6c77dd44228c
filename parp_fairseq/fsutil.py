"""Safe outputs: nothing half-written, nothing deleted that the tool did not write.

* Files (:func:`atomic_write`, :func:`atomic_torch_save`, :func:`atomic_write_text`,
  :func:`atomic_copy`) are written to a temporary sibling, flushed to disk (``fsync``) and renamed
  over the target: a kill, a full disk or a bad input leaves the old file or none, never a partial
  one.
* Folders (:func:`output_dir`) are built in a temporary sibling and then moved into place. An
  existing folder is only updated when it is empty or holds an earlier output of the same command
  (a ``.parp_fairseq.json`` marker lists what that command wrote): then exactly those entries are
  replaced and anything else in the folder stays. Any other non-empty folder is refused, naming it.
* Temporaries are named ``.<target>.parp-tmp-<pid>-<random>``; the next run writing the same
  target removes those of processes that no longer exist (a killed run's leftovers).
* Everything is created with the user's umask (not ``mkstemp``'s 0600 / ``mkdtemp``'s 0700).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import OutputError, describe_os_error

TMP_TAG = ".parp-tmp-"
MARKER = ".parp_fairseq.json"


def umask() -> int:
    """The process umask (read without changing it where /proc says it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}{TMP_TAG}{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(target, log: Callable[[str], None] = None) -> int:
    """Remove ``.<target>.parp-tmp-<pid>-*`` leftovers of processes that no longer run. Returns the count."""
    target = Path(target)
    return clean_stale_tmp_in(target.parent if str(target.parent) else Path("."), log, name=target.name)


def clean_stale_tmp_in(folder, log: Callable[[str], None] = None, name: Optional[str] = None) -> int:
    """Remove the ``.<name>.parp-tmp-<pid>-*`` leftovers in ``folder`` (any name when ``name`` is None)
    whose process no longer runs. Returns the count."""
    rx = re.compile(re.escape(f".{name}") + re.escape(TMP_TAG) + r"(\d+)-" if name is not None
                    else r"^\..+" + re.escape(TMP_TAG) + r"(\d+)-")
    n = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for p in entries:
        m = rx.match(p.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            n += 1
            (log or _stderr)(f"[parp_fairseq] removed {p}, left behind by an interrupted run")
        except OSError:
            pass
    return n


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def fsync_path(path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parent_dir(path: Path) -> Path:
    d = path.parent
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write {path}: {next(p for p in [d, *d.parents] if p.exists())} is a file, "
                          f"not a folder") from None
    except NotADirectoryError:
        bad = next((p for p in [d, *d.parents] if p.exists() and not p.is_dir()), d)
        raise OutputError(f"cannot write {path}: {bad} is a file, not a folder") from None
    except OSError as e:
        raise OutputError(f"cannot create the folder of {path}: {describe_os_error(e)}") from None
    return d


def _is_write_failure(e: BaseException) -> bool:
    """torch.save reports a failed write as RuntimeError (PytorchStreamWriter / inline_container)."""
    while e is not None:
        msg = str(e)
        if isinstance(e, OSError) or "inline_container" in msg or "PytorchStreamWriter" in msg or \
                "write" in msg.lower():
            return True
        e = e.__cause__ or e.__context__
    return False


def atomic_write(path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` and rename the (fsync-ed) result over ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    d = _parent_dir(path)
    clean_stale_tmp(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path) + secrets.token_hex(3), dir=d)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {describe_os_error(e, str(d))}") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~umask())
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(d, directory=True)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        if isinstance(e, RuntimeError) and _is_write_failure(e):  # torch's zip writer on a full disk
            raise OutputError(f"cannot write {path}: the write failed (disk full or file too large?): "
                              f"{str(e).splitlines()[0][:160]}") from None
        raise


def same_file(src, out, src_name: str = "input", out_name: str = "output") -> None:
    """Refuse writing an output over its own input."""
    if os.path.exists(src) and os.path.exists(out) and os.path.samefile(src, out):
        raise OutputError(f"{out_name} {out} is the {src_name} itself; write to another file")


def atomic_torch_save(obj: Any, path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_copy(src, dst) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_link(src, dst) -> None:
    """``dst`` as a hard link to ``src`` (a copy where the file system has none), through a temp name."""
    def write(tmp: str) -> None:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, write)


# ----------------------------------------------------------------------------------------------
def _read_marker(folder: Path) -> Optional[dict]:
    try:
        m = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and isinstance(m.get("files"), list) else None


def _check_owner(out: Path, tool: str, adopt: Optional[Iterable[str]]) -> Optional[set]:
    """Names in ``out`` that earlier runs of ``tool`` wrote (may be replaced); None if ``out`` is
    missing or empty. Raises :class:`OutputError` for a folder that is not ours."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise OutputError(f"{out} is a file; give a folder for the output of {tool}")
    existing = {p.name for p in out.iterdir()}
    if not existing:
        return None
    marker = _read_marker(out)
    if marker is not None and marker.get("tool") == tool:
        return {str(f) for f in marker["files"]} | {MARKER}
    if adopt is not None and existing <= set(adopt):
        return existing
    what = f"output of {marker.get('tool')}" if marker else "files that " + tool + " did not write"
    shown = ", ".join(sorted(existing)[:5]) + (f" (+{len(existing) - 5} more)" if len(existing) > 5 else "")
    raise OutputError(f"{out} is not empty and holds {what} ({shown}); nothing was changed. Give a new or "
                      f"empty folder (or remove that one yourself)")


def check_output_dir(out, tool: str, adopt: Optional[Iterable[str]] = None) -> None:
    """Fail now (before any work) if :func:`output_dir` would refuse ``out``; creates nothing."""
    out = Path(out)
    bad = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if bad is not None and bad != out:
        raise OutputError(f"cannot write {out}: {bad} is a file, not a folder")
    _check_owner(out, tool, adopt)


@contextlib.contextmanager
def output_dir(out, tool: str, adopt: Optional[Iterable[str]] = None) -> Iterator[Path]:
    """Yield a temporary folder; on success its entries land in ``out`` (see the module docstring).

    ``tool``: the command writing (recorded in ``out/.parp_fairseq.json``); ``adopt``: names an
    unmarked folder may hold and still count as an earlier output of this tool (folders written
    before the marker existed). On error the temporary folder is removed and ``out`` is unchanged.
    """
    out = Path(out)
    _parent_dir(out)
    clean_stale_tmp(out)
    _check_owner(out, tool, adopt)  # fail before the work, not after it
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out) + secrets.token_hex(3), dir=out.parent))
    except OSError as e:
        raise OutputError(f"cannot write {out}: {describe_os_error(e, str(out.parent))}") from None
    os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
        _commit(tmp, out, tool, adopt)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {out}: {describe_os_error(e)}") from None
        raise


def _commit(tmp: Path, out: Path, tool: str, adopt) -> None:
    new = sorted(p.name for p in tmp.iterdir())
    (tmp / MARKER).write_text(json.dumps({"tool": tool, "files": new}, indent=1) + "\n")
    for p in tmp.rglob("*"):
        fsync_path(p) if p.is_file() else None
    owned = _check_owner(out, tool, adopt)
    if owned is None:
        if out.exists():
            out.rmdir()  # empty
        os.replace(tmp, out)
        fsync_path(out.parent, directory=True)
        return
    clash = sorted((set(new) & {p.name for p in out.iterdir()}) - owned)
    if clash:
        raise OutputError(f"{out} holds {', '.join(clash[:5])}, which {tool} did not write and would replace; "
                          f"nothing was changed. Give a new or empty folder")
    trash = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out) + "old-", dir=out.parent))
    try:
        for name in sorted(owned):
            if (out / name).exists() or (out / name).is_symlink():
                os.replace(out / name, trash / name)
        for name in [*new, MARKER]:
            os.replace(tmp / name, out / name)
        fsync_path(out, directory=True)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (``algorithm``: a hashlib name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
