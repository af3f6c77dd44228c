"""Criterions. fairseq does not auto-import this folder: the package __init__ imports it."""
from .parp_ctc import ParpCtcCriterion  # noqa: F401
