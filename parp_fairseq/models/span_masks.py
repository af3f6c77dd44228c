"""Span masks (SpecAugment in wav2vec 2.0's feature space) drawn from the seeded torch RNG.

fairseq's ``compute_mask_indices`` draws every utterance's spans from ``np.random.default_rng(seed_i)``,
with ``seed_i=None`` -- fresh OS entropy -- unless it is given ``seed``, ``epoch`` and ``indices``.
``Wav2Vec2Model.apply_mask`` (and HuBERT's and data2vec's) pass none of them, so two finetuning runs
with one ``common.seed`` differ from the first update on. fairseq's trainer seeds the torch RNG with
``common.seed + num_updates`` before every step; :func:`seeded_span_masks` draws one integer from it
per forward and hands ``compute_mask_indices`` that seed, a per-call counter as ``epoch`` (time masks,
then channel masks) and ``arange(B)`` offset by the rank as ``indices``, so that

* a run is repeatable: same seed, same data order -> same masks -> same losses,
* a resumed run draws the masks the uninterrupted run would have (the seed is a function of the update),
* data-parallel replicas (same torch seed on every rank) still mask their utterances independently.

Everything else is stock: the model's own ``apply_mask`` runs with its own arguments (``mask_prob``,
``mask_length``, ``min_masks=2``, ``require_same_masks`` ...); only the name ``compute_mask_indices`` in
the globals that method resolves it from points to the seeded version while the forward runs. The
swap is undone on exit, also on an exception. fairseq runs a model's forward on one thread per
process; another thread calling the same fairseq module's ``compute_mask_indices`` during a forward
would get seeded masks too.
"""

import contextlib
import itertools
from typing import Iterator

import torch
from torch import nn

_NAME = "compute_mask_indices"


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@contextlib.contextmanager
def seeded_span_masks(w2v_model: nn.Module) -> Iterator[None]:
    """Within the context, ``w2v_model.apply_mask`` draws its span masks from the torch RNG.

    ``w2v_model``: the pretrained network (``Wav2Vec2Model``, ``HubertModel``,
    ``Data2VecAudioModel``). Draws nothing (the torch RNG stream is untouched, dropout as in a stock
    run) unless the model is in training mode with a time or channel mask probability above 0; models
    whose ``apply_mask`` does not call ``compute_mask_indices`` are left alone.
    """
    apply_mask = getattr(type(w2v_model), "apply_mask", None)
    scope = getattr(apply_mask, "__globals__", None)
    masking = getattr(w2v_model, "mask_prob", 0) > 0 or getattr(w2v_model, "mask_channel_prob", 0) > 0
    if not (w2v_model.training and masking) or scope is None or _NAME not in scope:
        yield
        return
    stock = scope[_NAME]
    seed = int(torch.randint(0, 2**31 - 1, (), dtype=torch.int64).item())
    offset = _rank() << 20  # replicas' utterances never share an index (batches are far below 2**20)
    calls = itertools.count()

    def compute_mask_indices(shape, *args, **kwargs):
        if kwargs.get("seed") is None:  # a caller that seeds on its own keeps its seed
            bsz = shape[0]
            kwargs.update(seed=seed, epoch=next(calls), indices=offset + torch.arange(bsz))
        return stock(shape, *args, **kwargs)

    scope[_NAME] = compute_mask_indices
    try:
        yield
    finally:
        scope[_NAME] = stock
