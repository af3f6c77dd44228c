"""Pruning algorithms as pure functions on tensors (no fairseq import)."""
from .magnitude import (  # noqa: F401
    RANKINGS, check_sparsity, magnitude_masks, masks_from_scores, num_to_prune,
    check_nm_sparsity, nm_masks, parse_nm, random_masks,
)
from .maskfile import MaskFile, canonical_name, check_compatible, load_mask_file, save_mask_file  # noqa: F401
from .schedule import imp_schedule, is_reprune_update, ramp_sparsity  # noqa: F401
from .stats import sparsity_report, weight_sparsity_report  # noqa: F401
