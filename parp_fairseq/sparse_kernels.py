"""Turn sparsity into speed: run a pruned model's linear layers on sparse kernels (inference only).

Two formats:

* ``"csr"``: the weight as a compressed-sparse-row tensor, ``y = (W_csr @ x^T)^T + b`` through
  ``torch.sparse.mm`` (MKL on CPU, cuSPARSE on GPU). Pays off at high unstructured sparsity.
* ``"2:4"``: ``torch.sparse.to_sparse_semi_structured`` (CUTLASS / cuSPARSELt sparse tensor cores,
  NVIDIA Ampere or newer, fp16/bf16). Needs a 2:4 mask (``model.pruning.ranking=2:4``).

fairseq's ``MultiheadAttention`` reads ``q_proj.weight`` (etc.) directly on its fast path
(``F.multi_head_attention_forward``); replaced projections therefore set
``skip_embed_dim_check``, which makes it call the projection modules instead.

    model = load_checkpoint(...)[0]; model.eval()
    sparsify_linears(model, "csr")       # or "2:4" on a CUDA half-precision model
"""

import re
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMATS = ("csr", "2:4")
DEFAULT_PATTERN = r"encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|fc1|fc2)$"


class SparseLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is stored sparse.

    Input ``(..., in_features)`` -> output ``(..., out_features)``, as ``nn.Linear``.
    """

    def __init__(self, linear: nn.Linear, fmt: str):
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"sparse format must be one of {FORMATS}, got {fmt!r}")
        self.fmt = fmt
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach()
        if fmt == "csr":
            self.register_buffer("weight_csr", w.to_sparse_csr(), persistent=False)
        else:
            if not w.is_cuda or w.dtype not in (torch.float16, torch.bfloat16):
                raise ValueError(f"2:4 kernels need a CUDA fp16/bf16 weight; got {w.dtype} on {w.device} "
                                 "(move the model with .cuda().half() first)")
            from torch.sparse import to_sparse_semi_structured

            groups = (w.reshape(-1, 4) != 0).sum(1)
            if bool((groups > 2).any()):
                raise ValueError(f"weight {tuple(w.shape)} is not 2:4 sparse ({int((groups > 2).sum())} groups of 4 "
                                 "keep more than 2); prune with model.pruning.ranking=2:4")
            self.weight_24 = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.fmt == "csr":
            y = torch.sparse.mm(self.weight_csr, x2.t()).t()
            if self.bias is not None:
                y = y + self.bias
        else:
            y = F.linear(x2, self.weight_24, self.bias)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.fmt}"


def sparsify_linears(model: nn.Module, fmt: str, pattern: str = DEFAULT_PATTERN,
                     min_sparsity: float = 0.0) -> Dict[str, float]:
    """Replace every ``nn.Linear`` whose name matches ``pattern`` (and whose weight is at least
    ``min_sparsity`` sparse) by a :class:`SparseLinear`. Returns ``{name: sparsity}`` of the
    replaced layers. The model must be in eval mode (the kernels have no backward)."""
    if model.training:
        raise ValueError("sparse kernels are for inference: call model.eval() first")
    rx = re.compile(pattern)
    done: Dict[str, float] = {}
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Linear) or not rx.search(name):
            continue
        s = 1.0 - torch.count_nonzero(mod.weight).item() / mod.weight.numel()
        if s < min_sparsity:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SparseLinear(mod, fmt))
        if hasattr(parent, "skip_embed_dim_check"):
            parent.skip_embed_dim_check = True  # fairseq MHA: call q/k/v/out_proj modules, no fast path
        done[name] = s
    if not done:
        raise ValueError(f"no linear layer matched {pattern!r} with sparsity >= {min_sparsity}")
    return done

