"""The learned grafting mask (after Panigrahi et al., ICML 2023): logits S per scalar parameter,
the relaxed model `theta_pre + sigmoid(S) * (theta_ft - theta_pre)`, trained for a few Adam steps on
the task loss plus a penalty on exceeding a budget of k scalars, then rounded to the k largest S.

Our reading (the paper's exact schedule is not ours to copy): S starts at +c on the top-|delta| set
of the budget and -c elsewhere, so zero steps give the top-|delta| baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from factrecall_bench.analyses.grafting import top_delta_mask, top_k_mask
from factrecall_bench.analyses.settings import GraftingSettings

Batch = Mapping[str, Tensor]


def initial_logits(delta: Tensor, k: int, init_logit: float) -> Tensor:
    """+init_logit on the k largest |delta|, -init_logit elsewhere (flat, fp32)."""
    start = torch.full((delta.numel(),), -init_logit)
    start[top_delta_mask(delta, k)] = init_logit
    return start


def relaxed_parameters(logits: Tensor, pre: Mapping[str, Tensor], delta: Tensor,
                       names: list[str]) -> dict[str, Tensor]:
    """theta_pre + sigmoid(S) * delta per named parameter (differentiable in S)."""
    gamma = torch.sigmoid(logits) * delta
    params, offset = {}, 0
    for name in names:
        base = pre[name]
        params[name] = base + gamma[offset:offset + base.numel()].view(base.shape).to(base.dtype)
        offset += base.numel()
    return params


def budget_penalty(logits: Tensor, k: int) -> Tensor:
    """relu(sum(sigmoid(S)) / k - 1): zero while the soft mask stays within its budget."""
    return torch.relu(torch.sigmoid(logits).sum() / max(k, 1) - 1.0)


def learn_mask(model: nn.Module, pre: Mapping[str, Tensor], delta: Tensor, names: list[str],
               batches: Sequence[Batch], k: int, settings: GraftingSettings) -> Tensor:
    """The flat bool mask of the k scalars with the largest learned logits."""
    device = next(model.parameters()).device
    pre_on = {name: pre[name].to(device).float() for name in names}
    delta_on = delta.to(device)
    logits = initial_logits(delta, k, settings.mask_init_logit).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=settings.mask_lr)
    model.eval()  # no dropout: the mask, not noise, should explain the loss
    for step in range(settings.mask_steps if batches else 0):
        batch = {key: value.to(device) for key, value in batches[step % len(batches)].items()}
        params = relaxed_parameters(logits, pre_on, delta_on, names)
        loss = functional_call(model, params, args=(), kwargs=dict(batch)).loss
        loss = loss + settings.mask_sparsity_weight * budget_penalty(logits, k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    # zero steps leave exactly k logits at +c: the top-|delta| set
    return top_k_mask(logits.detach().cpu(), k)
