"""Small helpers for results files (markdown sections rewritten in place)."""

from pathlib import Path
from typing import Optional


def update_markdown_section(path, name: str, text: str, title: str = "# Benchmarks\n") -> None:
    """Replace (or append) the block between ``<!-- name begin -->`` and ``<!-- name end -->``."""
    path = Path(path)
    begin, end = f"<!-- {name} begin -->", f"<!-- {name} end -->"
    old = path.read_text() if path.exists() else title
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old:
        pre, rest = old.split(begin, 1)
        new = pre + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    from .fsutil import atomic_write_text

    atomic_write_text(path, new)  # a crash mid-write leaves the old file, never half of one


def mean_std(values) -> "tuple[float, float]":
    """Mean and sample standard deviation (0 for one value) of the numbers in ``values``."""
    values = list(values)
    m = sum(values) / len(values)
    sd = (sum((x - m) ** 2 for x in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, sd


def fairseq_log_curve(log_path, key: str = "loss"):
    """``[(split, num_updates, value)]`` of ``key`` from a fairseq (hydra) training log: the
    ``train_inner`` lines and the ``valid`` summaries."""
    import re

    out = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if "][train_inner]" in line:
            m, u = re.search(rf"\b{key}=([-0-9.e]+)", line), re.search(r"num_updates=(\d+)", line)
            if m and u:
                out.append(("train", int(u.group(1)), float(m.group(1))))
        elif "][valid]" in line:
            m, u = re.search(rf"\| {key} ([-0-9.e]+)", line), re.search(r"num_updates (\d+)", line)
            if m and u:
                out.append(("valid", int(u.group(1)), float(m.group(1))))
    return out


def blank_phase(log_path) -> Optional[str]:
    """Why a CTC finetuning run recognizes nothing, from its fairseq training log, or None when it does
    (or the log has no validation yet). fairseq's valid ``uer`` is 100 when every hypothesis is empty, as
    for a model still in the CTC blank phase (it emits only blanks), and above 100 when it emits garbage;
    a run whose last validation is at 100 or above has not learned to emit units."""
    valid = [(u, v) for split, u, v in fairseq_log_curve(log_path, "uer") if split == "valid"]
    if not valid or valid[-1][1] < 100.0:
        return None
    if all(v >= 100.0 for _, v in valid):
        return f"valid uer >= 100 at every one of its {len(valid)} validations (last: {valid[-1][1]:g} at update {valid[-1][0]})"
    u, v = min(valid, key=lambda x: x[1])
    return f"valid uer {valid[-1][1]:g} at its last validation (update {valid[-1][0]}; its best was {v:g} at update {u})"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), with matplotlib's own debug
    logging quiet (fairseq configures the root logger)."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before the import: it logs at import
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(points, path, title: str, ylabel: str = "loss") -> None:
    """Line plot of :func:`fairseq_log_curve` output (PNG)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, style in (("train", "-"), ("valid", "o--")):
        pts = [(u, v) for s, u, v in points if s == split]
        if pts:
            ax.plot([u for u, _ in pts], [v for _, v in pts], style, label=split)
    ax.set_xlabel("updates")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
