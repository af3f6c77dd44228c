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
