"""Fixes applied once at import, without editing site-packages."""

from __future__ import annotations

import argparse

import torch


def allow_fairseq_globals() -> None:
    """torch >= 2.6 loads with ``weights_only=True``. Allow-list what fairseq pickles instead of
    disabling ``weights_only``:

    * checkpoints: a ``Dictionary`` (``audio_finetuning``'s task state) and, in old ones, an
      argparse ``Namespace``;
    * distributed resume: rank 0 broadcasts the loaded checkpoint (``broadcast_object`` ->
      ``torch.load``), whose ``cfg`` is then an omegaconf ``DictConfig``: its container and node
      classes and the builtins they are rebuilt from, and fairseq's ``_TensorPlaceholder``.
    """
    import collections
    import typing

    from fairseq.data.dictionary import Dictionary
    from fairseq.distributed.utils import _TensorPlaceholder
    from omegaconf import DictConfig, ListConfig, base, nodes

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:
        return
    omegaconf_nodes = [nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
                       nodes.EnumNode, nodes.BytesNode, nodes.PathNode]
    add([Dictionary, argparse.Namespace, _TensorPlaceholder, DictConfig, ListConfig, base.ContainerMetadata, base.Metadata,
         *omegaconf_nodes, typing.Any, collections.defaultdict, dict, list, int])


def console_script(name: str) -> str:
    """Path of a console script (``fairseq-hydra-train``...) installed next to this interpreter,
    so that ``.venv/bin/python -m ...`` works without an activated venv; else the bare name."""
    import os
    import sys

    cand = os.path.join(os.path.dirname(sys.executable), name)
    return cand if os.access(cand, os.X_OK) else name


def hydra_train_cmd(config_dir, config_name: str, save_dir, *overrides: str, run_dir=None) -> list:
    """The ``fairseq-hydra-train`` command line of one run with this plugin as ``common.user_dir``:
    checkpoints in ``save_dir``, hydra's outputs in ``run_dir`` (default ``save_dir/hydra``)."""
    import os

    user_dir = os.path.dirname(os.path.abspath(__file__))  # == parp_fairseq.USER_DIR
    return [console_script("fairseq-hydra-train"), "--config-dir", os.path.abspath(config_dir),
            "--config-name", config_name, f"common.user_dir={user_dir}", f"checkpoint.save_dir={save_dir}",
            f"hydra.run.dir={run_dir or os.path.join(save_dir, 'hydra')}", *overrides]
