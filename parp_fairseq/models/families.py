"""Pretrained model families beside wav2vec 2.0: where fairseq keeps them and how their encoder is built.

* ``data2vec_audio`` lives in ``fairseq/examples/data2vec``; stock fairseq finetunes it through
  ``wav2vec_ctc`` once ``--user-dir examples/data2vec`` registered it. Importing the plugin does
  that, so ``model.w2v_path=data2vec_audio.pt`` works with one ``user_dir``. Its transformer is
  wav2vec 2.0's (``encoder.layers.N.self_attn.q_proj`` ...): every method and granularity applies.
  Where another user dir registered it first, that registration is kept.
* ``hubert`` is in fairseq's registry; its CTC model (``hubert_ctc``) wraps it in
  ``HubertEncoder``, whose ``extract_features`` returns a tuple and whose pretraining task needs
  the k-means label dictionaries. :func:`hubert_encoder` builds that encoder for the plugin's
  ``parp_hubert_ctc`` and keeps the dictionaries' symbols in the finetuning task's state, so that
  they are saved in every checkpoint (``task_state.dictionaries``, where stock HuBERT finetuning
  saves them) and the model can be rebuilt from it anywhere, also after ``parp-fairseq-export``.
"""

import importlib
import logging

from ..errors import InputError

logger = logging.getLogger(__name__)

FAMILY_MODULES = {"data2vec_audio": "fairseq.examples.data2vec.models.data2vec_audio"}
# the CTC model of each family: (plugin model, stock fairseq model)
CTC_MODELS = {"hubert": ("parp_hubert_ctc", "hubert_ctc")}
DEFAULT_CTC = ("parp_wav2vec_ctc", "wav2vec_ctc")


def register_families() -> None:
    from fairseq.models import MODEL_REGISTRY

    for name, module in FAMILY_MODULES.items():
        if name in MODEL_REGISTRY:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:  # a fairseq build without its examples
            logger.warning(f"{name} is not available ({e}); its checkpoints cannot be finetuned here")


def ctc_models(family: str):
    """``(plugin model name, stock fairseq model name)`` of a pretrained family's CTC model."""
    return CTC_MODELS.get(family, DEFAULT_CTC)


def hubert_encoder(cfg, task):
    """fairseq's ``HubertEncoder`` for a plugin CTC config ``cfg`` (a ``Wav2Vec2CtcConfig``).

    Building from ``cfg.w2v_path`` (a HuBERT pretraining checkpoint, ``cfg`` or ``args`` layout) reads
    the label dictionaries from its ``task_state``; building from a finetuned checkpoint
    (``cfg.w2v_args`` set) takes them from the finetuning task's state, where the first build put them.
    """
    from fairseq.models.hubert.hubert_asr import HubertEncoder

    from ..checkpoints import encoder_family, load_checkpoint

    if cfg.w2v_args is None:
        state = load_checkpoint(cfg.w2v_path)  # safe load; fairseq reads it again below
        family = encoder_family(state)  # cfg or old args layout
        if family != "hubert":
            raise InputError(f"model.w2v_path={cfg.w2v_path} is a {family or 'unknown'!r} checkpoint but "
                             f"model._name=parp_hubert_ctc finetunes HuBERT; use model._name=parp_wav2vec_ctc "
                             f"for wav2vec 2.0 / data2vec checkpoints")
        dictionaries = (state.get("task_state") or {}).get("dictionaries")
        if not dictionaries:
            raise InputError(f"the HuBERT checkpoint {cfg.w2v_path} has no task_state.dictionaries (the "
                             f"k-means label dictionaries its output layer was built for); it is not a "
                             f"checkpoint fairseq's hubert_pretraining wrote")
        # HubertModel only takes len() of each: the symbol lists rebuild it and, unlike pickled
        # Dictionary objects, load with torch's weights_only=True also in stock fairseq
        task.state.merge_state_dict({"dictionaries": [list(getattr(d, "symbols", d)) for d in dictionaries]})
    elif "dictionaries" not in task.state.state_dict:
        raise InputError("this HuBERT CTC checkpoint has no task_state.dictionaries (the pretraining label "
                         "dictionaries); it was not written by parp_hubert_ctc or stock hubert finetuning")
    return HubertEncoder(cfg, task)  # reads cfg.autoregressive: a field of both HuBERT configs
