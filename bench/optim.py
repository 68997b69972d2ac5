"""Optimiser and schedule of the CLIP4Clip lineage (BertAdam + warmup_cosine), shared by every method.

BertAdam is not in torch: Adam without bias correction, decoupled weight decay, and a per-tensor gradient
norm clip inside the step (``max_grad_norm``). ``train.optimizer=adamw`` switches to torch's AdamW.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class BertAdam(Optimizer):
    def __init__(self, params, lr: float, betas=(0.9, 0.98), eps: float = 1e-6, weight_decay: float = 0.0,
                 max_grad_norm: float = 1.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      max_grad_norm=max_grad_norm))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                m, v = state["next_m"], state["next_v"]
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                update = m / (v.sqrt() + group["eps"])  # no bias correction (BERT/CLIP4Clip)
                if group["weight_decay"] > 0.0:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
        return loss


def warmup_cosine(progress: float, warmup: float) -> float:
    """CLIP4Clip's multiplier: x/warmup during warm-up, then 0.5(1+cos(pi x)) (not rescaled after warm-up)."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(method, train_cfg: dict) -> Optimizer:
    """Four groups: backbone / new modules x decay / no decay. Decay skips names with 'bias' or 'LayerNorm'
    (so CLIP's ln_* weights and the identity score matrices *are* decayed, as in the official code)."""
    backbone_ids = {id(p) for p in method.backbone.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in method.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = "bias" in name or "LayerNorm" in name
        groups.setdefault((id(p) in backbone_ids, no_decay), []).append(p)
    lr = float(train_cfg["lr"])
    param_groups = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        param_groups.append({
            "params": params,
            "lr": lr * float(train_cfg["coef_lr"]) if is_backbone else lr,
            "weight_decay": 0.0 if no_decay else float(train_cfg["weight_decay"]),
            "name": f"{'backbone' if is_backbone else 'new'}{'_nodecay' if no_decay else ''}",
        })
    name = train_cfg.get("optimizer", "bertadam")
    if name == "bertadam":
        return BertAdam(param_groups, lr=lr, betas=train_cfg["betas"], eps=float(train_cfg["eps"]),
                        max_grad_norm=float(train_cfg["grad_clip"]))
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(train_cfg["betas"]), eps=float(train_cfg["eps"]))
    raise ValueError(f"unknown optimizer {name!r}")


def build_scheduler(optimizer: Optimizer, total_steps: int, warmup: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step / max(total_steps, 1), warmup)
    )
