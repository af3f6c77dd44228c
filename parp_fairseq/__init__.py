"""parp_fairseq: PARP, OMP/MPI/IMP and S3-Router pruning for fairseq's wav2vec 2.0 CTC finetuning.

Load it in fairseq with ``common.user_dir=$(parp-fairseq-user-dir)`` (hydra) or
``--user-dir $(parp-fairseq-user-dir)``. fairseq imports this package, auto-imports ``models/`` and
``tasks/``; criterions are imported here.
"""

import os

from ._compat import allow_fairseq_globals
from .fairseq_hooks import install as _install_fairseq_hooks

__version__ = "0.1.0"

allow_fairseq_globals()
_install_fairseq_hooks()  # safe checkpoint loading, atomic saves, resume past a corrupt checkpoint_last.pt

from . import criterions, models, tasks  # noqa: E402,F401  (register with fairseq)

USER_DIR = os.path.dirname(os.path.abspath(__file__))
