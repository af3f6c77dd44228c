"""``parp_wav2vec_ctc``: the stock ``wav2vec_ctc`` model plus pruning masks.

The network, its forward and its state_dict keys are those of fairseq's ``Wav2VecCtc``; masked
parameters add a ``<param>_mask`` boolean buffer (and ``<param>_scores`` for S3-Router, whose
frozen weight stays under its stock name). ``pruning.method=none`` registers no mask and is the
stock model. The pruning algorithms are pure functions in :mod:`parp_fairseq.pruning`;
this module only wires them to fairseq's hooks:

* ``build_model``: initial mask (mask file / MPI on the loaded pretrained weights / random /
  S3-Router scores), S3-Router freezing,
* ``after_update`` (called by the ``parp_audio_finetuning`` task after each optimizer step):
  keep fixed masks exact, re-prune PARP every ``reprune_interval`` updates, refresh S3-Router
  masks from the updated scores,
* ``prepare_for_evaluation`` (task's ``begin_valid_epoch``, on every rank): PARP re-prune and a
  cross-rank check that every data-parallel replica holds the same masks,
* ``state_dict``: a PARP model that is off-target is saved re-pruned, without touching the live
  weights, so that every rank of a DDP job keeps identical weights (fairseq only calls
  ``state_dict`` on rank 0),
* ``load_state_dict``: dense (stock) checkpoints load into a masked model keeping its masks.
"""


import logging
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import register_model
from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc, Wav2VecEncoder
from omegaconf import II

from ..checkpoints import effective_weights, encoder_model_cfg, is_pruning_key, load_checkpoint
from ..errors import InputError, MissingFileError, ParpFairseqError
from ..pruning.magnitude import RANKINGS, check_sparsity
from ..pruning.maskfile import load_mask_file
from ..pruning.masker import ParamMasker, find_targets
from ..pruning.scores import SCORE_INITS, GroupScoreMasker, ScoreMasker, init_scores
from ..pruning.structured import GRANULARITIES, GROUP_NORMS, Granularity
from ..pruning.schedule import is_reprune_update, ramp_sparsity
from ..pruning.stats import sparsity_report
from .families import ctc_models
from .span_masks import seeded_span_masks

logger = logging.getLogger(__name__)

DEFAULT_PATTERN = r"encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc1|fc2)"
PRUNE_METHODS = ("none", "omp", "mpi", "random", "imp", "parp", "s3router", "s3router_p")
# method -> how masks behave in training
_MODE = {"omp": "fixed", "mpi": "fixed", "random": "fixed", "imp": "fixed", "parp": "adjust",
         "s3router": "score", "s3router_p": "score"}
_LAYER_NORM = re.compile(r"(^|\.)(layer_norm|self_attn_layer_norm|final_layer_norm)(\.|$)")


@dataclass
class PruningConfig(FairseqDataclass):
    method: ChoiceEnum(PRUNE_METHODS) = field(  # type: ignore[valid-type]
        default="none",
        metadata={"help": "none: dense finetuning (stock). omp/imp: fixed mask from `mask_path`. "
                          "mpi: fixed magnitude mask of the initial (pretrained) weights. random: "
                          "fixed random mask. parp: start from `mask_path` (or MPI), keep pruned "
                          "weights trainable, re-prune every `reprune_interval` updates. "
                          "s3router: learn masks over FROZEN pretrained weights through scores. "
                          "s3router_p: the same over a finetuned model (`init_from`)"},
    )
    sparsity: Optional[float] = field(
        default=None,
        metadata={"help": "target sparsity = fraction of the masked weights REMOVED, in [0, 1); "
                          "default: the sparsity of `mask_path`"},
    )
    mask_path: Optional[str] = field(
        default=None, metadata={"help": "mask file (parp-fairseq-mask) to start from"}
    )
    ranking: ChoiceEnum(RANKINGS) = field(  # type: ignore[valid-type]
        default="global",
        metadata={"help": "magnitude ranking: global (all masked tensors together, as the PARP "
                          "paper), layer (per transformer layer) or tensor (per weight matrix)"},
    )
    pattern: str = field(
        default=DEFAULT_PATTERN,
        metadata={"help": "regex fully matching the names of the modules to prune, relative to "
                          "the wav2vec 2.0 model (e.g. encoder.layers.0.fc1)"},
    )
    prune_bias: bool = field(default=False, metadata={"help": "also mask the biases (granularity=weight; "
                                                               "structured groups always mask theirs)"})
    granularity: ChoiceEnum(GRANULARITIES) = field(  # type: ignore[valid-type]
        default="weight",
        metadata={"help": "what a mask removes: weight (unstructured), neuron (whole FFN neurons: a row "
                          "of fc1 with its bias and a column of fc2), head (whole attention heads: "
                          "their rows of q/k/v and columns of out_proj) or neuron+head. Structured "
                          "masks can be sliced into a smaller dense model (parp-fairseq-export --slice)"},
    )
    group_norm: ChoiceEnum(GROUP_NORMS) = field(  # type: ignore[valid-type]
        default="l1",
        metadata={"help": "structured magnitude of a group: l1 = mean |w|, l2 = RMS of w, over its "
                          "weights (the mean makes neurons and heads comparable)"},
    )
    remove_whole_layers: bool = field(
        default=False,
        metadata={"help": "structured: allow a layer to lose ALL its heads / neurons (default: one "
                          "of each stays)"},
    )
    reprune_interval: int = field(
        default=50, metadata={"help": "PARP: re-prune to the target every N updates (0 with "
                                      "reprune_interval_epochs)"}
    )
    reprune_interval_epochs: int = field(
        default=0,
        metadata={"help": "PARP: re-prune every N EPOCHS instead (the official code's unit), at the "
                          "start of epochs N+1, 2N+1, ...; 0 = use reprune_interval (updates)"},
    )
    validate_before_reprune: bool = field(
        default=False,
        metadata={"help": "PARP: validate the current (regrown) weights and re-prune afterwards, as the "
                          "official code; default: re-prune, then validate. Checkpoints always hold the "
                          "re-pruned weights"},
    )
    log_reprune_loss: bool = field(
        default=True,
        metadata={"help": "PARP: at a validation that comes with a re-prune, also validate the other "
                          "side (logged as loss / uer / wer _before_reprune and _after_reprune; "
                          "best_checkpoint_metric=wer_after_reprune needs it with validate_before_reprune)"},
    )
    ramp_updates: int = field(
        default=0,
        metadata={"help": "progressive pruning: ramp the sparsity from `ramp_start_sparsity` to "
                          "the target over this many updates (cubic); 0 = no ramp"},
    )
    ramp_start_sparsity: float = field(
        default=0.0, metadata={"help": "sparsity at update 0 when ramping"}
    )
    init_from: Optional[str] = field(
        default=None,
        metadata={"help": "initialize ALL weights from this wav2vec_ctc checkpoint (dense or "
                          "pruned; its masks are ignored), e.g. an early checkpoint to rewind "
                          "to in IMP; masks still come from `mask_path` / `method`"},
    )
    score_init: ChoiceEnum(SCORE_INITS) = field(  # type: ignore[valid-type]
        default="ori",
        metadata={"help": "S3-Router score init: kaiming (random), magnitude (0/1 magnitude mask), "
                          "magnitude_scale (w / score_scale), ori (random values ranked as |w|)"},
    )
    score_scale: float = field(default=1.0, metadata={"help": "divisor of magnitude_scale scores"})
    train_biases: bool = field(default=False, metadata={"help": "S3-Router: also train biases"})
    train_layer_norms: bool = field(default=False, metadata={"help": "S3-Router: also train layer norms"})
    train_weights: bool = field(
        default=False, metadata={"help": "S3-Router: co-train the masked weights with their scores"}
    )
    seed: int = field(default=II("common.seed"), metadata={"help": "seed of random masks / scores"})


@dataclass
class ParpWav2Vec2CtcConfig(Wav2Vec2CtcConfig):
    pruning: PruningConfig = field(default_factory=PruningConfig)
    seeded_span_masks: bool = field(
        default=True,
        metadata={"help": "draw the span masks of model.apply_mask (mask_prob, mask_channel_prob) from the torch "
                          "RNG that fairseq seeds with common.seed + num_updates, so that a run is repeatable and "
                          "a resumed run masks as the uninterrupted one; false: stock fairseq, which draws them "
                          "from OS entropy (runs of one seed differ)"},
    )


def validate_pruning_config(pc) -> None:
    """One clear :class:`InputError` (a ValueError) for each bad setting, before anything is built or written."""
    try:
        _validate_pruning_config(pc)
    except ParpFairseqError:
        raise
    except ValueError as e:  # from the pure functions (check_sparsity ...)
        raise InputError(str(e)) from None


def _validate_pruning_config(pc) -> None:
    if pc.method not in PRUNE_METHODS:
        raise InputError(f"pruning.method={pc.method!r} is unknown; choose one of {PRUNE_METHODS}")
    if pc.sparsity is not None:
        check_sparsity(pc.sparsity, "pruning.sparsity")
    check_sparsity(pc.ramp_start_sparsity, "pruning.ramp_start_sparsity")
    if pc.granularity != "weight" and str(pc.ranking) not in ("global", "layer", "tensor"):
        raise InputError(f"pruning.granularity={pc.granularity} ranks whole groups (global, layer or "
                         f"tensor); pruning.ranking={pc.ranking} is for unstructured masks")
    if pc.reprune_interval_epochs < 0:
        raise InputError(f"pruning.reprune_interval_epochs={pc.reprune_interval_epochs} must be >= 0")
    if pc.method == "parp" and pc.reprune_interval <= 0 and pc.reprune_interval_epochs == 0:
        raise InputError(f"pruning.reprune_interval={pc.reprune_interval}: PARP re-prunes every "
                         f"N updates and needs N >= 1 (or every N epochs: pruning.reprune_interval_epochs)")
    try:
        re.compile(pc.pattern)
    except re.error as e:
        raise InputError(f"pruning.pattern={pc.pattern!r} is not a valid regular expression ({e}); it must "
                         f"fully match module names such as encoder.layers.0.fc1") from None
    if pc.ramp_updates < 0:
        raise InputError(f"pruning.ramp_updates={pc.ramp_updates} must be >= 0")
    if pc.method in ("omp", "imp") and not pc.mask_path:
        raise InputError(f"pruning.method={pc.method} needs pruning.mask_path: compute the mask of "
                         f"a finetuned checkpoint with `parp-fairseq-mask omp "
                         f"--checkpoint FT.pt --sparsity S --out mask.pt`")
    if pc.method in ("mpi", "random") and pc.sparsity is None and not pc.mask_path:
        raise InputError(f"pruning.method={pc.method} needs pruning.sparsity (fraction removed)")
    if pc.method in ("s3router", "s3router_p"):
        if pc.sparsity is None:
            raise InputError(f"pruning.method={pc.method} needs pruning.sparsity (fraction removed)")
        if pc.mask_path:
            raise InputError(f"pruning.method={pc.method} learns its masks from scores; "
                             f"pruning.mask_path is not used: drop it")
        if pc.method == "s3router_p" and not pc.init_from:
            raise InputError("pruning.method=s3router_p prunes a FINETUNED model: set "
                             "pruning.init_from=FINETUNED.pt (its weights are frozen, scores = |w|/scale)")
    if pc.method == "parp" and pc.sparsity is None and not pc.mask_path:
        raise InputError("pruning.method=parp needs pruning.sparsity or a pruning.mask_path")
    if pc.mask_path and not os.path.isfile(pc.mask_path):
        raise MissingFileError(
            f"pruning.mask_path={pc.mask_path!r} does not exist; compute it with "
            f"`parp-fairseq-mask omp|mpi|random --checkpoint CKPT --sparsity S --out {pc.mask_path}`"
        )
    if pc.init_from and not os.path.isfile(pc.init_from):
        raise MissingFileError(f"pruning.init_from={pc.init_from!r} does not exist")


@register_model("parp_wav2vec_ctc", dataclass=ParpWav2Vec2CtcConfig)
class ParpWav2VecCtc(Wav2VecCtc):
    """wav2vec 2.0 CTC model with pruning masks (see module docstring)."""

    def __init__(self, cfg: ParpWav2Vec2CtcConfig, w2v_encoder: Wav2VecEncoder):
        super().__init__(cfg, w2v_encoder)
        pc = cfg.pruning
        validate_pruning_config(pc)
        self.pruning_cfg = pc
        self.seeded_span_masks = bool(getattr(cfg, "seeded_span_masks", True))
        self.num_updates = 0
        self.masker: Optional[Union[ParamMasker, ScoreMasker]] = None
        self._target_sparsity: Optional[float] = pc.sparsity
        self._off_target = False  # PARP weights may have regrown since the last re-prune
        self._saved_report: Optional[Dict[str, float]] = None
        self.pending_reprune = False  # PARP: re-prune before the next training step
        self._init_masks: Optional[Dict[str, torch.Tensor]] = None  # the run's first mask (diagnostics)
        self._diag: Dict[str, float] = {}
        self._diag_at: Optional[int] = None  # num_updates the cached S3-Router diagnostics belong to
        self.reprune_stash: Optional[Dict[str, torch.Tensor]] = None  # the other side of a re-prune
        self.stash_side = ""  # "before" / "after": what reprune_stash holds
        if pc.method == "none":
            return
        layers = self.w2v_encoder.w2v_model.encoder.layers
        self.cut = Granularity(str(pc.granularity), layers[0].self_attn.num_heads if len(layers) else 0,
                               str(pc.group_norm), pc.remove_whole_layers)
        if self.cut.structured:
            targets = [t for t in find_targets(self, pc.pattern, ("weight", "bias")) if self.cut.selects(t.name)]
            if not targets:
                raise InputError(f"pruning.pattern={pc.pattern!r} matches no tensor of a {pc.granularity} group "
                                 f"(heads: self_attn.q/k/v/out_proj; neurons: fc1/fc2). The S3-Router overlay "
                                 f"masks the FFN only: with granularity=head set pruning.pattern too")
            self.cut.sets({t.name: list(getattr(t.module, t.param).shape) for t in targets})  # complete groups?
        else:
            targets = find_targets(self, pc.pattern, ("weight", "bias") if pc.prune_bias else ("weight",))
        if _MODE[pc.method] == "score":
            if cfg.freeze_finetune_updates > 0:
                raise InputError(
                    f"pruning.method={pc.method} trains scores from update 0, but "
                    f"model.freeze_finetune_updates={cfg.freeze_finetune_updates} runs the encoder "
                    f"under no_grad until then: set model.freeze_finetune_updates=0")
            self.masker = (GroupScoreMasker(targets, pc.sparsity, str(pc.ranking), self.cut)
                           if self.cut.structured else ScoreMasker(targets, pc.sparsity, pc.ranking))
        else:
            self.masker = ParamMasker(targets, _MODE[pc.method])

    def forward(self, **kwargs):
        """Stock ``Wav2VecCtc.forward``; in training its span masks come from the seeded torch RNG
        (:mod:`parp_fairseq.models.span_masks`) unless ``model.seeded_span_masks=false``."""
        if not (self.seeded_span_masks and self.training and getattr(self.w2v_encoder, "apply_mask", False)):
            return super().forward(**kwargs)  # no span masks: nothing drawn, the stock forward
        with seeded_span_masks(self.w2v_encoder.w2v_model):
            return super().forward(**kwargs)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build_model(cls, cfg: ParpWav2Vec2CtcConfig, task):
        validate_pruning_config(cfg.pruning)  # fail before loading the pretrained model
        try:
            return cls._build_model(cfg, task)
        except ParpFairseqError:
            raise
        except (ValueError, FileNotFoundError) as e:  # bad masks / files from the pure functions: one line
            raise InputError(str(e)) from e

    @classmethod
    def _build_model(cls, cfg: ParpWav2Vec2CtcConfig, task):
        if cfg.pruning.method != "none" and not hasattr(task, "building_from_checkpoint"):
            raise InputError(
                f"pruning.method={cfg.pruning.method} needs the task's update hooks: set "
                f"task._name=parp_audio_finetuning (got {type(task).__name__})")
        model = cls(cfg, cls.make_encoder(cfg, task))
        if isinstance(model.masker, ScoreMasker):
            model._freeze_for_score_training()
        if getattr(task, "building_from_checkpoint", False):
            return model  # weights and masks come from the checkpoint's state_dict
        if cfg.pruning.init_from:
            model.load_weights_from(cfg.pruning.init_from)
        model.initialize_masks()
        return model

    @classmethod
    def make_encoder(cls, cfg, task):
        """The pretrained encoder with its CTC projection (fairseq's ``Wav2VecEncoder``; the HuBERT
        model overrides this)."""
        encoder = Wav2VecEncoder(cfg, len(task.target_dictionary))
        if type(encoder.w2v_model).__name__ == "HubertModel":  # builds, then fails in forward: say it now
            raise InputError(f"model.w2v_path={cfg.w2v_path} is a HuBERT checkpoint: finetune it with "
                             f"model._name=parp_hubert_ctc (fairseq's HubertEncoder), not {cls.__name__}")
        return encoder

    def _freeze_for_score_training(self) -> None:
        """S3-Router: only scores and the CTC head train (plus biases / layer norms / weights if asked)."""
        pc = self.pruning_cfg
        score_ids = {id(p) for p in self.masker.scores().values()}
        weight_ids = {id(p) for p in self.masker.params().values()}
        for name, p in self.named_parameters():
            train = (id(p) in score_ids or name.startswith("w2v_encoder.proj.")
                     or (pc.train_weights and id(p) in weight_ids)
                     or (pc.train_biases and name.endswith((".bias", ".parametrizations.bias.original")))
                     or (pc.train_layer_norms and _LAYER_NORM.search(name) is not None))
            p.requires_grad_(train)

    def _public_state_dict(self) -> Dict[str, torch.Tensor]:
        """Live state_dict with the stock key names (plus ``_mask`` / ``_scores``)."""
        sd = super().state_dict()
        return self.masker.public_state(sd) if self.masker is not None else sd

    def _load_public(self, sd, strict=True, model_cfg=None, args=None):
        if self.masker is not None:
            sd = self.masker.internal_state(sd)
        out = super().load_state_dict(sd, strict, model_cfg, args)
        if self.masker is not None:
            self.masker.invalidate()
        return out

    def load_weights_from(self, path: str) -> None:
        """Copy every weight (not masks/scores) of a dense or pruned CTC checkpoint into this model."""
        state = load_checkpoint(path)  # safe: weights_only + literal config strings
        name = (state.get("cfg") or {}).get("model", {}).get("_name")
        ctc = ctc_models(self.family())
        if name not in ctc:
            raise InputError(f"pruning.init_from={path!r} is a {name!r} checkpoint; it must be a "
                             f"finetuned CTC model ({ctc[1]} or {ctc[0]}). Pretrained "
                             f"checkpoints go to model.w2v_path")
        extra = self.masker.public_keys() if self.masker is not None else []
        sd = effective_weights(state["model"])  # a pruned source: what it computes with
        own = self._public_state_dict()
        own_w = {k: v for k, v in own.items() if k not in extra}
        bad = [(k, list(v.shape), list(own_w[k].shape)) for k, v in sd.items()
               if k in own_w and v.shape != own_w[k].shape]
        if bad or set(sd) != set(own_w):
            raise InputError(
                f"pruning.init_from={path!r} does not fit this model: shape mismatches {bad[:3]}, "
                f"missing {sorted(set(own_w) - set(sd))[:3]}, unexpected {sorted(set(sd) - set(own_w))[:3]} "
                f"(another architecture or another target dictionary?)")
        self._load_public({**sd, **{k: own[k] for k in extra}}, strict=True)
        logger.info(f"initialized weights from {path}")

    def initialize_masks(self) -> None:
        """Initial mask of a new run: from ``mask_path``, or computed on the current weights."""
        if self.masker is None:
            return
        pc = self.pruning_cfg
        if isinstance(self.masker, ScoreMasker):
            scores = init_scores(self.masker.score_basis(), str(pc.score_init), self.target_sparsity,
                                 pc.score_scale, pc.seed)
            self.masker.set_scores(scores)
            src = f"{pc.score_init} scores"
        elif pc.mask_path:
            mf = load_mask_file(pc.mask_path)
            family = self.family()
            if mf.family and family and mf.family != family:
                raise InputError(
                    f"{pc.mask_path} holds masks of a {mf.family} model but this model finetunes a {family} "
                    f"({self.cfg.w2v_path}): masks do not carry over between pretrained families even where "
                    f"the shapes agree; compute the mask from a {family} checkpoint")
            if mf.granularity != self.cut.granularity:
                raise InputError(
                    f"{pc.mask_path} holds granularity={mf.granularity} masks but the model has "
                    f"pruning.granularity={self.cut.granularity}: recompute the mask with "
                    f"`parp-fairseq-mask ... --granularity {self.cut.granularity}` or set "
                    f"pruning.granularity={mf.granularity}")
            if self._target_sparsity is None:
                self._target_sparsity = mf.sparsity
            elif pc.method != "parp" and abs(mf.report()["global"] - self._target_sparsity) > 1e-3:
                raise InputError(
                    f"pruning.sparsity={self._target_sparsity} but {pc.mask_path} has sparsity "
                    f"{mf.report()['global']:.4f}; drop pruning.sparsity or recompute the mask")
            self.masker.set_masks(mf.masks, source=f"mask file {pc.mask_path}")
            src = f"{pc.mask_path} ({mf.method}, {mf.ranking})"
        else:
            s = self.sparsity_at(0)
            if pc.method == "random":
                masks = self.cut.random(self.masker.shapes(), s, str(pc.ranking), seed=pc.seed)
            else:  # mpi, parp: magnitude of the initial (pretrained) weights
                masks = self.cut.magnitude(self.masker.params(), s, str(pc.ranking))
            self.masker.set_masks(masks, source=f"{pc.method} mask")
            src = f"{pc.method} on the initial weights"
        self._init_masks = {n: m.detach().clone() for n, m in self.masker.masks().items()}
        rep = self.masker.report()
        logger.info(f"pruning: method={pc.method} granularity={self.cut.granularity} mask from {src}: "
                    f"sparsity {rep['global']:.4f} over {len(self.masker.targets)} tensors")

    def family(self) -> str:
        """The pretrained family this model finetunes (``wav2vec2``, ``data2vec_audio`` ...)."""
        return str(encoder_model_cfg(self.cfg).get("_name") or "")

    # -- schedule -------------------------------------------------------------------------------
    @property
    def target_sparsity(self) -> float:
        return 0.0 if self._target_sparsity is None else self._target_sparsity

    def sparsity_at(self, update: int) -> float:
        pc = self.pruning_cfg
        return ramp_sparsity(update, self.target_sparsity, pc.ramp_start_sparsity, pc.ramp_updates)

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def after_update(self, num_updates: int) -> bool:
        """Called after the optimizer step that made ``num_updates`` updates in total.
        Returns True when PARP re-pruned (the caller then also zeros optimizer master copies)."""
        self.num_updates = num_updates
        if self.masker is None:
            return False
        if self.masker.mode == "score":
            # unconditional: fairseq's optimizers update p.data, which bumps no version counter
            self.masker.refresh()
        elif self.masker.mode == "fixed":
            self.masker.apply_()
        else:
            self._off_target = True
            self.reprune_stash = None
            pc = self.pruning_cfg
            if pc.reprune_interval_epochs == 0 and is_reprune_update(num_updates, pc.reprune_interval):
                self.reprune(self.sparsity_at(num_updates))
                return True
        return False

    def begin_epoch(self, epoch: int) -> None:
        """PARP with ``reprune_interval_epochs=N``: ask for a re-prune at the start of epochs N+1, 2N+1, ...
        (carried out by the task before the next training step, where the optimizer is at hand)."""
        n = self.pruning_cfg.reprune_interval_epochs if self.masker is not None else 0
        if n > 0 and self.masker.mode == "adjust" and epoch > 1 and (epoch - 1) % n == 0:
            self.pending_reprune = True

    def before_train_step(self) -> bool:
        """A re-prune asked for by ``begin_epoch`` or put off by a validate-first validation;
        True when it happened (the caller then zeros the optimizer's fp32 master copies)."""
        self.reprune_stash = None
        if not self.pending_reprune:
            return False
        self.pending_reprune = False
        if self.masker is None or not self._off_target:
            return False
        self.reprune(self.sparsity_at(self.num_updates))
        return True

    @property
    def at_target(self) -> bool:
        """True when the live weights are those a checkpoint saved now would hold (no PARP regrowth
        since the last re-prune)."""
        return not self._off_target

    def prepare_for_evaluation(self) -> None:
        """Bring a PARP model to its target sparsity (same result on every rank), then check
        that every data-parallel rank holds the same masks.

        With ``validate_before_reprune`` the regrown weights are validated and the re-prune is put
        off until the next training step. With ``log_reprune_loss`` the weights of the other side
        (before / after the re-prune) are kept for the task's ``valid_step``."""
        pc = self.pruning_cfg
        if self.masker is not None and self._off_target:
            s = self.sparsity_at(self.num_updates)
            if pc.validate_before_reprune:
                if pc.log_reprune_loss:
                    masks = self.cut.magnitude(self.masker.params(), s, str(pc.ranking))
                    self.reprune_stash = {n: p.detach().masked_fill(~masks[n], 0)
                                          for n, p in self.masker.params().items()}
                    self.stash_side = "after"
                self.pending_reprune = True
            else:
                if pc.log_reprune_loss:
                    self.reprune_stash = {n: p.detach().clone() for n, p in self.masker.params().items()}
                    self.stash_side = "before"
                self.reprune(s)
        self.check_masks_consistent()

    @torch.no_grad()
    def swap_stash(self) -> None:
        """Exchange the live target weights with ``reprune_stash`` (call twice to undo): the tensors
        behind the parameters trade places, nothing is copied."""
        for n, p in self.masker.params().items():
            p.data, self.reprune_stash[n] = self.reprune_stash[n], p.data

    @torch.no_grad()
    def check_masks_consistent(self) -> None:
        """Under torch.distributed, fail loudly if ranks disagree on masks or masked weights.

        fairseq never broadcasts buffers, so masks stay identical only because every rank computes
        them from identical weights; this compares per-tensor kept counts and masked-weight sums
        (two all-reduces of a few hundred numbers, at validation time only)."""
        import torch.distributed as dist

        if self.masker is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        masks, params = self.masker.masks(), self.masker.params()
        dev = next(iter(params.values())).device
        sig = torch.stack([torch.stack([m.count_nonzero().double(), (params[n].double() * m).sum()])
                           for n, m in masks.items()]).flatten().to(dev)
        lo, hi = sig.clone(), sig.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            bad = [n for i, n in enumerate(masks) if not torch.equal(lo[2 * i: 2 * i + 2], hi[2 * i: 2 * i + 2])]
            raise RuntimeError(f"pruning masks differ between data-parallel ranks for {len(bad)} tensors, "
                               f"e.g. {bad[:3]}: ranks trained on different weights")
        logger.info(f"masks identical on all {dist.get_world_size()} ranks ({len(masks)} tensors)")

    @torch.no_grad()
    def reprune(self, sparsity: float) -> None:
        """Magnitude re-prune of the current weights to ``sparsity`` (PARP); records the fraction of
        mask entries that flipped and the IoU of the new mask with the run's first one."""
        from ..pruning.analysis import flip_fraction, iou

        new = self.cut.magnitude(self.masker.params(), sparsity, str(self.pruning_cfg.ranking))
        self._diag = {"mask_flip": flip_fraction(self.masker.masks(), new)}  # before the buffers change
        self.masker.set_masks(new, source="re-prune")
        self._off_target = False
        if self._init_masks is not None:
            self._diag["mask_iou_init"] = iou(new, self._init_masks)

    def pruning_diagnostics(self) -> Dict[str, float]:
        """PARP: ``mask_flip`` (fraction of mask entries the last re-prune changed) and
        ``mask_iou_init`` (IoU of the current mask with the run's first). S3-Router:
        ``mask_changed`` (fraction of entries that differ from the first mask) and ``mask_iou_init``.
        Empty when unknown (a model built from a checkpoint has no first mask)."""
        if self.masker is None or self._init_masks is None:
            return dict(self._diag)
        if self.masker.mode == "score" and self._diag_at != self.num_updates:
            from ..pruning.analysis import flip_fraction, iou

            masks = self.masker.masks()
            self._diag = {"mask_changed": flip_fraction(masks, self._init_masks),
                          "mask_iou_init": iou(masks, self._init_masks)}
            self._diag_at = self.num_updates
        return dict(self._diag)

    def sparsity_stats(self) -> Dict[str, float]:
        """Mask sparsity of the live model, global and per layer (logged every interval)."""
        return {} if self.masker is None else self.masker.report()

    def saved_sparsity_stats(self) -> Dict[str, float]:
        """Sparsity of what the last ``state_dict()`` call returned (written into checkpoints)."""
        return self._saved_report if self._saved_report is not None else self.sparsity_stats()

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        """Stock key names plus ``<param>_mask`` (and ``<param>_scores`` for S3-Router)."""
        sd = super().state_dict(*args, **kwargs)
        self._saved_report = None
        if self.masker is None:
            return sd
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        sd = self.masker.public_state(sd, prefix)
        if not self._off_target:
            return sd
        # PARP between re-prunes: save the re-pruned weights, leave the live ones alone
        masks = self.cut.magnitude(self.masker.params(), self.sparsity_at(self.num_updates),
                                   str(self.pruning_cfg.ranking))
        for t in self.masker.targets:
            m = masks[t.name]
            sd[prefix + t.mask_key] = m
            sd[prefix + t.key] = getattr(t.module, t.param).detach().masked_fill(~m, 0)
        self._saved_report = sparsity_report(masks)
        return sd

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        extra_keys = {k for k in state_dict if is_pruning_key(k)}
        if self.masker is None:
            if extra_keys:
                raise InputError(
                    "this checkpoint is PRUNED (it holds masks) but the model has "
                    "pruning.method=none. Load it with its own config, give its masks to a "
                    "pruning method (`parp-fairseq-mask extract`), or squash it into a dense "
                    "stock checkpoint with `parp-fairseq-export`")
            return super().load_state_dict(state_dict, strict, model_cfg, args)
        expected = set(self.masker.public_keys())
        if not extra_keys:
            logger.info("loading a DENSE checkpoint into the pruned model: keeping its masks")
            own = self._public_state_dict()
            state_dict = {**state_dict, **{k: own[k] for k in expected}}
        elif extra_keys != expected:
            raise InputError(
                f"the checkpoint's masks ({len(extra_keys)} tensors, e.g. {sorted(extra_keys)[:2]}) "
                f"do not match the model's pruning targets ({len(expected)}, e.g. "
                f"{sorted(expected)[:2]}): it was pruned with another pruning.pattern/prune_bias "
                f"or another method (S3-Router checkpoints hold scores too)")
        out = self._load_public(state_dict, strict, model_cfg, args)
        if isinstance(self.masker, ParamMasker):
            self.masker.apply_()
        self._off_target = False
        return out
