"""Parameter counts of a method: total, trainable, and the similarity head (modules outside the backbone that
pool or score)."""

from __future__ import annotations


def param_counts(method) -> dict[str, int]:
    params = list(method.parameters())
    head_ids = set()
    head = 0
    for module in method.head_modules():
        for p in module.parameters():
            if id(p) not in head_ids:
                head_ids.add(id(p))
                head += p.numel()
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "head": head,
    }
