"""Fixes applied once at import, without editing site-packages."""

from __future__ import annotations

import argparse

import torch


def allow_fairseq_globals() -> None:
    """torch >= 2.6 loads with ``weights_only=True``; fairseq checkpoints pickle a Dictionary
    (``audio_finetuning``'s task state) and, for old ones, an argparse Namespace. Allow-list
    exactly those instead of disabling ``weights_only``."""
    from fairseq.data.dictionary import Dictionary

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([Dictionary, argparse.Namespace])


def console_script(name: str) -> str:
    """Path of a console script (``fairseq-hydra-train``...) installed next to this interpreter,
    so that ``.venv/bin/python -m ...`` works without an activated venv; else the bare name."""
    import os
    import sys

    cand = os.path.join(os.path.dirname(sys.executable), name)
    return cand if os.access(cand, os.X_OK) else name
