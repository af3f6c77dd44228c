"""Loading files without running code from them.

Two ways a checkpoint can carry code, and what stops each:

1. Pickled globals (``__reduce__`` payloads). Every checkpoint and mask file is read by
   ``torch.load(weights_only=True)`` (:func:`torch_load` here; fairseq's own
   ``load_checkpoint_to_cpu`` relies on torch's default, which is the same) with an allow-list of
   what fairseq itself pickles (see ``_compat.allow_fairseq_globals``). Anything else is refused with
   one error naming the global. A user who trusts a file can allow named globals with
   ``PARP_FAIRSEQ_TRUSTED_GLOBALS=module.Name[,module.Name...]``; nothing turns ``weights_only`` off.
2. Config strings that fairseq ``eval()``-s when it builds a model, optimizer or criterion
   (``conv_feature_layers``, ``adam_betas``, ``wer_args``, ...; in ``cfg``, in old checkpoints'
   argparse ``args``, and nested in ``w2v_args``). :func:`validate_config_literals` accepts them
   only as plain literals (lists / tuples / numbers / strings, ``+`` and ``*`` of lists, as the stock
   defaults are written) of the expected shape, before fairseq sees them.
"""

from __future__ import annotations

import argparse
import ast
import os
import pickle
import re
import zipfile
from typing import Any, Dict, Iterator, Optional, Tuple

from .errors import CheckpointError, MissingFileError

TRUST_ENV = "PARP_FAIRSEQ_TRUSTED_GLOBALS"

# fairseq config fields whose string value is passed to eval() (fairseq 0.12 / main)
EVAL_FIELDS = {
    "conv_feature_layers": "conv",
    "conv_aggregator_layers": "conv",
    "feature_encoder_spec": "conv",
    "adam_betas": "pair",
    "adamax_betas": "pair",
    "lamb_betas": "pair",
    "adafactor_eps": "pair",
    "wer_args": "any",
    "xformers_att_config": "any",
    "override_encoder_layers": "any",
    "character_filters": "any",
    "encoder_layers": "any",  # fconv: eval()-ed only when a string (the transformer's is an int)
    "decoder_layers": "any",
    "decoder_attention": "any",
    "encoder_attention": "any",
}
_MAX_LEN = 100_000


class _Unsafe(ValueError):
    pass


def safe_literal(text: str) -> Any:
    """Evaluate ``text`` if it is a pure literal expression: numbers, strings, booleans, None,
    lists, tuples and dicts of them, unary minus, and ``+`` / ``*`` on lists, tuples and numbers
    (``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``). Anything else (names, calls, attributes,
    subscripts, comprehensions, lambdas) raises ``ValueError``."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise _Unsafe(f"not a Python literal ({e.msg})") from None

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float, complex, str, bytes, bool, type(None))):
            return n.value
        if isinstance(n, (ast.List, ast.Tuple)):
            vals = [ev(e) for e in n.elts]
            return vals if isinstance(n, ast.List) else tuple(vals)
        if isinstance(n, ast.Dict) and all(k is not None for k in n.keys):
            return {ev(k): ev(v) for k, v in zip(n.keys, n.values)}
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Mult, ast.Sub)):
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Mult):
                seq, k = (a, b) if isinstance(a, (list, tuple)) else (b, a)
                if isinstance(seq, (list, tuple)) and isinstance(k, int) and not isinstance(k, bool):
                    if len(seq) * max(k, 0) > _MAX_LEN:
                        raise _Unsafe("literal too large")
                    return seq * k
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
                    return a * b
            elif isinstance(n.op, ast.Add) and type(a) is type(b) and isinstance(a, (list, tuple, int, float, str)):
                return a + b
            elif isinstance(n.op, ast.Sub) and all(isinstance(x, (int, float)) for x in (a, b)):
                return a - b
        raise _Unsafe(f"{type(n).__name__} is not allowed in a literal")

    return ev(tree)


def _check_shape(kind: str, value: Any) -> Optional[str]:
    if kind == "conv":
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(t, (list, tuple)) and len(t) in (2, 3, 4) and all(isinstance(x, int) and not isinstance(x, bool) for x in t)
            for t in value)
        return None if ok else "expected a list of (dim, kernel, stride) int tuples"
    if kind == "pair":
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value)
        return None if ok else "expected a pair of numbers"
    return None


def _walk(obj: Any, path: str, seen: set) -> Iterator[Tuple[str, str, Any]]:
    """(dotted path, key, value) of every mapping entry inside nested dicts / configs / Namespaces."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, (DictConfig, ListConfig)):
        try:
            obj = OmegaConf.to_container(obj, resolve=True)
        except Exception:
            obj = OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else str(k)
            yield p, str(k), v
            yield from _walk(v, p, seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]", seen)


def validate_config_literals(state: Dict[str, Any], source: str = "checkpoint") -> None:
    """Refuse a checkpoint whose ``cfg`` / ``args`` (at any depth, ``w2v_args`` included) hold a
    string that fairseq would ``eval()`` and that is not a plain literal of the expected shape."""
    for top in ("cfg", "args"):
        if state.get(top) is None:
            continue
        for path, key, value in _walk(state[top], top, set()):
            kind = EVAL_FIELDS.get(key)
            if kind is None or not isinstance(value, str):
                continue
            try:
                parsed = safe_literal(value)
            except ValueError as e:
                raise CheckpointError(
                    f"{source}: {path} = {value[:120]!r} is not a plain literal ({e}); fairseq would eval() it "
                    f"when building the model, so the file is refused. Use a checkpoint from a trusted source") from None
            problem = _check_shape(kind, parsed)
            if problem:
                raise CheckpointError(f"{source}: {path} = {value[:120]!r}: {problem}; the file is refused")


# ----------------------------------------------------------------------------------------------
def allow_trusted_globals() -> None:
    """Allow-list the globals named in ``$PARP_FAIRSEQ_TRUSTED_GLOBALS`` (files the user trusts)."""
    import importlib

    import torch

    names = [n.strip() for n in os.environ.get(TRUST_ENV, "").split(",") if n.strip()]
    objs = []
    for n in names:
        mod, _, attr = n.rpartition(".")
        try:
            objs.append(getattr(importlib.import_module(mod), attr))
        except (ImportError, AttributeError, ValueError):
            raise CheckpointError(f"{TRUST_ENV}: {n!r} is not an importable module.Name") from None
    if objs:
        torch.serialization.add_safe_globals(objs)


_GLOBAL_RX = re.compile(r"GLOBAL\s+([\w.]+)")


def explain_load_error(path: str, e: BaseException) -> CheckpointError:
    """One clear error for a file torch could not load (unsafe pickle, truncated, not a checkpoint)."""
    msg = str(e)
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in msg.lower() or "GLOBAL" in msg:
        m = _GLOBAL_RX.search(msg)
        g = m.group(1) if m else "an object"
        return CheckpointError(
            f"{path} pickles {g}, which is not on the allow-list of what fairseq checkpoints hold; it was NOT "
            f"loaded (loading it could run code). If you trust this file, allow it explicitly with "
            f"{TRUST_ENV}={g if m else 'module.Name'}")
    if isinstance(e, (EOFError, zipfile.BadZipFile, OSError)) or "zip" in msg.lower() \
            or "central directory" in msg.lower() or "archive" in msg.lower() or not is_readable_checkpoint(path):
        size = os.path.getsize(path) if os.path.exists(path) else 0
        return CheckpointError(f"{path} is corrupt or truncated ({size} bytes; {type(e).__name__}): "
                               f"not a readable torch checkpoint. Was its save interrupted?")
    return CheckpointError(f"{path} could not be read as a checkpoint: {type(e).__name__}: {msg.splitlines()[0][:300] if msg else ''}")


def torch_load(path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with one clear error for every failure.
    The one place where parp_fairseq itself calls ``torch.load``."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} {path!r} does not exist")
    allow_trusted_globals()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise explain_load_error(path, e) from None


def is_readable_checkpoint(path) -> bool:
    """Cheap integrity check of a torch zip checkpoint (central directory + CRCs), no unpickling."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False
