"""Pretrained model families that fairseq keeps outside its registry, registered by the plugin.

``data2vec_audio`` lives in ``fairseq/examples/data2vec``; stock fairseq finetunes it through
``wav2vec_ctc`` once ``--user-dir examples/data2vec`` registered it. Importing the plugin does
that, so ``model.w2v_path=data2vec_audio.pt`` works with one ``user_dir``. Its transformer is
wav2vec 2.0's (``encoder.layers.N.self_attn.q_proj`` ...): every method and granularity applies.
Where another user dir registered it first, that registration is kept.
"""

import importlib
import logging

logger = logging.getLogger(__name__)

FAMILY_MODULES = {"data2vec_audio": "fairseq.examples.data2vec.models.data2vec_audio"}


def register_families() -> None:
    from fairseq.models import MODEL_REGISTRY

    for name, module in FAMILY_MODULES.items():
        if name in MODEL_REGISTRY:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:  # a fairseq build without its examples
            logger.warning(f"{name} is not available ({e}); its checkpoints cannot be finetuned here")
