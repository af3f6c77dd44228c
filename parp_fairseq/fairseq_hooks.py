"""Safety wrappers around fairseq's checkpoint I/O, installed once when the plugin is imported.

fairseq has no hook for these, so the plugin wraps four functions of ``fairseq.checkpoint_utils``
(the originals do the work; nothing of fairseq is copied or forked):

* ``load_checkpoint_to_cpu`` (every checkpoint fairseq reads: ``model.w2v_path``, resume,
  ``fairseq-generate``, our commands): a missing, truncated or non-checkpoint file, or one that
  pickles a global outside the allow-list, is one clear :class:`~parp_fairseq.errors.CheckpointError`;
  config strings that fairseq ``eval()``-s must be plain literals
  (:func:`parp_fairseq.safe_load.validate_config_literals`), checked before fairseq builds anything.
* ``torch_persistent_save``: written to a temporary file, ``fsync``-ed and renamed (fairseq
  renames without ``fsync``);
* ``PathManager.copy`` as used by ``save_checkpoint`` (``checkpoint_last.pt`` / ``_best`` are
  COPIES of the first file saved, written in place by fairseq): copied to a temporary file, then
  renamed, so a kill or a full disk never leaves a truncated ``checkpoint_last.pt``;
* ``load_checkpoint`` (resume): a corrupt ``checkpoint_last.pt`` (e.g. from a run killed by an
  older version) is reported and the run resumes from the newest readable checkpoint of
  ``save_dir`` (optimizer, scheduler and data iterator included); with none, one error says what
  to do. Leftover temporary files of killed saves are removed. Before anything is loaded, a
  ``best_checkpoint_metric`` that names a PARP re-prune metric the run will not log is one clear
  error (fairseq's own is a ``KeyError`` after the first epoch).

A process started by ``parp-fairseq-sweep`` / ``parp-fairseq-imp`` (``PARP_FAIRSEQ_KILL_GROUP=1``,
its own process group) takes its children (data loader or distributed workers) down with it on
SIGTERM, which it receives when its parent dies.
"""

from __future__ import annotations

import glob
import logging
import os
import signal

from .errors import CheckpointError, InputError, MissingFileError, ParpFairseqError, install_excepthook
from .fsutil import atomic_copy, atomic_torch_save, clean_stale_tmp_in
from .safe_load import allow_trusted_globals, explain_load_error, is_readable_checkpoint, validate_config_literals

logger = logging.getLogger("parp_fairseq")
KILL_GROUP_ENV = "PARP_FAIRSEQ_KILL_GROUP"


def _local(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and "://" not in os.fspath(path)


class _AtomicCopyPathManager:
    """fairseq's PathManager with an atomic ``copy`` for local files (all else delegated)."""

    def __init__(self, pm):
        self._pm = pm

    def __getattr__(self, name):
        return getattr(self._pm, name)

    def copy(self, src_path, dst_path, overwrite=False):
        if not (_local(src_path) and _local(dst_path)):
            return self._pm.copy(src_path, dst_path, overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False
        atomic_copy(src_path, dst_path)
        return True


def clean_save_dir(save_dir: str) -> None:
    """Remove temporaries of killed saves: ours (``.<name>.parp-tmp-<dead pid>-*``) and fairseq's
    ``checkpoint*.pt.tmp``."""
    if not os.path.isdir(save_dir):
        return
    clean_stale_tmp_in(save_dir, log=logger.warning)
    for name in os.listdir(save_dir):
        p = os.path.join(save_dir, name)
        if name.startswith("checkpoint") and name.endswith(".pt.tmp") and os.path.isfile(p):
            try:
                os.unlink(p)
                logger.warning(f"removed {p}, left behind by an interrupted checkpoint save")
            except OSError:
                pass


def newest_readable_checkpoint(save_dir: str, suffix: str = "", exclude=()) -> str | None:
    skip = {os.path.abspath(x) for x in exclude}
    cands = [p for p in glob.glob(os.path.join(save_dir, f"checkpoint*{suffix}.pt")) if os.path.abspath(p) not in skip]
    for p in sorted(cands, key=os.path.getmtime, reverse=True):
        if is_readable_checkpoint(p):
            return p
    return None


def install() -> None:
    from fairseq import checkpoint_utils

    if getattr(checkpoint_utils, "_parp_fairseq_hooks", False):
        return
    orig_load_to_cpu = checkpoint_utils.load_checkpoint_to_cpu
    orig_save = checkpoint_utils.torch_persistent_save
    orig_load_checkpoint = checkpoint_utils.load_checkpoint

    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        if _local(path) and not os.path.isfile(path):
            raise MissingFileError(f"checkpoint {os.fspath(path)!r} does not exist")
        from .pretrained import verify_if_shipped

        verify_if_shipped(path)  # the shipped default model: sha256 checked before it is read
        allow_trusted_globals()
        try:
            state = orig_load_to_cpu(path, arg_overrides, load_on_all_ranks)
        except ParpFairseqError:
            raise
        except Exception as e:
            raise explain_load_error(os.fspath(path), e) from None
        if not isinstance(state, dict) or "model" not in state:
            raise CheckpointError(f"{os.fspath(path)} is not a fairseq checkpoint (no 'model' entry)")
        validate_config_literals(state, os.fspath(path))
        return state

    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not _local(filename):
            return orig_save(obj, filename, async_write)
        atomic_torch_save(obj, filename)

    def load_checkpoint(cfg, trainer, **passthrough_args):
        from .tasks.parp_audio_finetuning import reprune_metric_problem

        problem = reprune_metric_problem(getattr(cfg, "best_checkpoint_metric", None), trainer.get_model())
        if problem:  # fairseq would fail with a bare KeyError after the first epoch's training
            raise InputError(problem)
        clean_save_dir(cfg.save_dir)
        suffix = trainer.checkpoint_suffix or ""
        last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        if cfg.restore_file == "checkpoint_last.pt" and os.path.isfile(last) and not is_readable_checkpoint(last):
            alt = newest_readable_checkpoint(cfg.save_dir, suffix, exclude=[last])
            size = os.path.getsize(last)
            if alt is None:
                raise CheckpointError(
                    f"{last} is corrupt ({size} bytes: its save was interrupted) and {cfg.save_dir} holds no other "
                    f"readable checkpoint. Move it away to start this run over: mv {last} {last}.corrupt")
            logger.warning(f"{last} is corrupt ({size} bytes: its save was interrupted); resuming from {alt}, "
                           f"the newest readable checkpoint (the next save replaces checkpoint_last)")
            cfg.restore_file = alt
            try:
                return orig_load_checkpoint(cfg, trainer, **passthrough_args)
            finally:
                cfg.restore_file = "checkpoint_last.pt"  # saved configs must keep resuming from _last
        return orig_load_checkpoint(cfg, trainer, **passthrough_args)

    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
    checkpoint_utils.torch_persistent_save = torch_persistent_save
    checkpoint_utils.load_checkpoint = load_checkpoint
    checkpoint_utils.PathManager = _AtomicCopyPathManager(checkpoint_utils.PathManager)
    checkpoint_utils._parp_fairseq_hooks = True
    install_excepthook()
    _install_group_kill()


def _install_group_kill() -> None:
    """In a training process started by our commands: SIGTERM takes the whole process group down."""
    if os.environ.get(KILL_GROUP_ENV) != "1" or os.getpid() != os.getpgrp():
        return

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.killpg(os.getpgrp(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        pass
