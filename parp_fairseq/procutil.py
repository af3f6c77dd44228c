"""Child training processes that die with their parent, and one lock per work folder."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set

from .errors import InputError
from .fsutil import atomic_write_text
from .fairseq_hooks import KILL_GROUP_ENV

_PR_SET_PDEATHSIG = 1


def _child_setup(parent_pid: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec (after setsid)
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
        keep_niceness_in_new_session()

    return setup


def keep_niceness_in_new_session() -> None:
    """Give this process's new session the niceness the process has (``nice -n 19 parp-fairseq-sweep run``).

    Linux with ``sched_autogroup`` shares the CPU between sessions first and applies a process's nice
    value only inside its session, so a child started in a session of its own (``start_new_session``)
    would compete at full weight with everything else on the machine however niced its parent. Writing
    the niceness to ``/proc/self/autogroup`` (only ever raising it, which needs no privilege) keeps a
    niced sweep's training runs niced. Nothing changes where the kernel has no autogroups or gives new
    sessions none (autogroups off, some sandboxes); the nice value then applies machine-wide anyway."""
    niceness = os.nice(0)
    if niceness <= 0:
        return
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(niceness))  # nice values stop at 19
    except OSError:  # no autogroup support, or /proc not writable: nice applies machine-wide anyway
        pass


class ChildGroup:
    """The children that several threads of one command run at once (``parp-fairseq-sweep run --jobs``):
    :meth:`stop` ends every running child and refuses new ones, so that one job's failure or a Ctrl-C
    stops them all instead of leaving the other jobs training."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: Set[subprocess.Popen] = set()
        self.stopped = False

    def _start(self, start: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:  # a stop() between the check and the start cannot miss the new child
            if self.stopped:
                raise RuntimeError("not started: the other jobs of this command were stopped")
            p = start()
            self._procs.add(p)
            return p

    def _done(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(p)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            procs = list(self._procs)
        for p in procs:
            _kill_group(p)


def torch_threads(threads: Optional[int], environ: Optional[Dict[str, str]] = None,
                  default: Optional[int] = None) -> Optional[str]:
    """The torch thread count (``OMP_NUM_THREADS``) of a CPU training run: ``threads`` (``--threads``), else
    ``environ``'s (this process's by default), else ``default`` (None: torch's own); a count below 1 is refused."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: a training run needs at least 1 torch thread")
    count = threads or (os.environ if environ is None else environ).get("OMP_NUM_THREADS") or default
    return None if count is None else str(count)


def cpu_kind() -> str:
    """What besides its thread count decides a CPU run's float sums: the CPU model and torch's build with
    the kernels it picks on this CPU, e.g. ``Intel(R) Xeon(R) Processor (family 6 model 167), torch
    2.13.0+cpu AVX512``."""
    import torch

    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:  # the end of the first processor's block
                    if info:
                        break
                    continue
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or info.get("Hardware") or "unknown CPU"
    return (f"{name} (family {info.get('cpu family', '?')} model {info.get('model', '?')}), "
            f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}")


def record_cpu_run(d: Path, env: Optional[Dict[str, str]], log: Callable[[str], None], tool: str = "sweep",
                   kind: Optional[str] = None) -> None:
    """Write what a CPU run's numbers depend on when it starts: its torch thread count (``OMP_NUM_THREADS``
    of ``env``) to ``d/threads`` and the CPU and torch build (:func:`cpu_kind`, or ``kind``) to ``d/cpu``.
    When ``d`` was started with another count or on another kind, ``log`` a warning: the resumed run is
    neither setting's straight run. ``tool`` names the command in the warning (``sweep``, ``imp``)."""
    count = (env or {}).get("OMP_NUM_THREADS")
    if count is None:  # a GPU run or a user environment left alone
        return
    records = (("threads", count, "with {} torch thread(s)", "pass --threads {}"),
               ("cpu", kind or cpu_kind(), "on {}", "finish it on a machine of the kind it started on"))
    for file, now, how, advice in records:
        f = Path(d) / file
        if not f.exists():
            atomic_write_text(f, now + "\n")
            continue
        before = f.read_text().strip()
        if before != now:
            log(f"[{tool}] warning: {Path(d).name} was started {how.format(before)} and goes on {how.format(now)}: "
                f"its numbers will not repeat a straight run (rerun it in a new folder, or "
                f"{advice.format(before)})")


def run_child(cmd: List[str], log_file=None, on_line: Optional[Callable[[str], None]] = None,
              env: Optional[Dict[str, str]] = None, group: Optional[ChildGroup] = None) -> int:
    """Run ``cmd`` (a ``fairseq-hydra-train`` / ``parp-fairseq-imp`` command) as a child that cannot
    outlive this process: its own process group, SIGTERM to it when this process dies (even by
    SIGKILL, through ``PR_SET_PDEATHSIG``), and the plugin in the child passes SIGTERM on to the
    child's own workers. Ctrl-C / SIGTERM / an exception here stop the whole group too.
    Output lines go to ``log_file`` (and ``on_line``). ``env``: variables set for the child on top of
    this process's (``CUDA_VISIBLE_DEVICES``, ``OMP_NUM_THREADS``); ``group``: see :class:`ChildGroup`.
    Returns the exit code."""
    env = {**os.environ, **(env or {}), KILL_GROUP_ENV: "1", "PYTHONUNBUFFERED": "1"}

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE if log_file or on_line else None,
                                stderr=subprocess.STDOUT if log_file or on_line else None, text=True, env=env,
                                start_new_session=True, preexec_fn=_child_setup(os.getpid()))

    p = group._start(start) if group is not None else start()
    prev = {}

    def forward(signum, frame):
        _kill_group(p)
        handler = prev.get(signum)
        if callable(handler):
            handler(signum, frame)
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: rely on PDEATHSIG
            prev[sig] = signal.signal(sig, forward)
    try:
        if p.stdout is not None:
            for line in p.stdout:
                if log_file is not None:
                    log_file.write(line)
                    log_file.flush()
                if on_line is not None:
                    on_line(line)
        return p.wait()
    except BaseException:
        _kill_group(p)
        raise
    finally:
        if group is not None:
            group._done(p)
        for sig, h in prev.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, h)


def _kill_group(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


LOCK_NAME = ".parp_fairseq.lock"


@contextlib.contextmanager
def workdir_lock(workdir, command: str, name: str = LOCK_NAME) -> Iterator[None]:
    """An exclusive ``flock`` on ``<workdir>/<name>`` (``.parp_fairseq.lock``) for the whole command;
    a second command on the same folder is refused at once, naming the holder. The kernel drops the
    lock when the holder dies, so a killed run never leaves a stale lock."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise InputError(f"{workdir} is in use by {holder}; wait for it to finish (or stop it) before "
                             f"running {command} on the same folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command} (pid {os.getpid()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_holder(workdir, name: str = LOCK_NAME) -> Optional[str]:
    """Who holds ``<workdir>/<name>`` now (the text its holder wrote, e.g. ``parp-fairseq-sweep run
    (pid 123)``), or None when nobody does; takes nothing and creates nothing."""
    path = Path(workdir) / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        return None
    finally:
        os.close(fd)
