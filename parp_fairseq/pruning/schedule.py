"""Sparsity schedules as pure functions of the update number."""

from __future__ import annotations

from typing import List

from .magnitude import check_sparsity


def ramp_sparsity(update: int, target: float, start: float = 0.0, ramp_updates: int = 0,
                  begin_update: int = 0, power: float = 3.0) -> float:
    """Progressive (gradual) sparsity at ``update``.

    Zhu & Gupta (2017) polynomial ramp from ``start`` at ``begin_update`` to ``target`` at
    ``begin_update + ramp_updates``: ``s_t = target + (start - target) * (1 - p) ** power``
    with ``p`` the progress in [0, 1]. ``ramp_updates <= 0`` means no ramp (always ``target``).
    """
    check_sparsity(target, "target sparsity")
    check_sparsity(start, "start sparsity")
    if ramp_updates <= 0:
        return target
    p = min(max((update - begin_update) / float(ramp_updates), 0.0), 1.0)
    return target + (start - target) * (1.0 - p) ** power


def is_reprune_update(update: int, interval: int) -> bool:
    """PARP re-prunes after every ``interval``-th update (``update`` counted from 1)."""
    if interval <= 0:
        raise ValueError(f"re-prune interval must be a positive number of updates, got {interval}")
    return update > 0 and update % interval == 0


IMP_SCHEDULES = ("remaining", "original")


def imp_schedule(target: float, rate: float, mode: str = "remaining") -> List[float]:
    """Sparsities of the IMP rounds; the last round is clipped to ``target``.

    * ``remaining``: each round removes ``rate`` of the weights still REMAINING (geometric):
      ``imp_schedule(0.5, 0.2) == [0.2, 0.36, 0.488, 0.5]``.
    * ``original`` (the official PARP code): each round removes ``rate`` of the ORIGINAL weights,
      so the sparsities are ``rate, 2 rate, ...``: ``imp_schedule(0.5, 0.1, "original") ==
      [0.1, 0.2, 0.3, 0.4, 0.5]`` (round r prunes ``1 / (1/rate - r + 1)`` of what remains).
    """
    check_sparsity(target, "target sparsity")
    if not 0.0 < rate < 1.0:
        raise ValueError(f"IMP prune rate per round must be in (0, 1), got {rate}")
    if mode not in IMP_SCHEDULES:
        raise ValueError(f"IMP schedule {mode!r} is unknown; choose one of {IMP_SCHEDULES}")
    out: List[float] = []
    keep = 1.0
    while target > 0 and (not out or out[-1] < target - 1e-9):
        if mode == "remaining":
            keep *= 1.0 - rate
            s = 1.0 - keep
        else:
            s = rate * (len(out) + 1)
        out.append(min(round(s, 10), target))
    return out
