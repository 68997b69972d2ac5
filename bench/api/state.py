"""The state type every method stage returns, and the helpers the harness uses to move states around.

A state is a plain ``dict[str, Tensor]`` whose tensors share their first (batch) dimension, so the harness can
slice, concatenate, tile, cache and all-gather it without knowing what it holds.
"""

from __future__ import annotations

from typing import Iterable

import torch

State = dict[str, torch.Tensor]


def state_batch(state: State) -> int:
    return int(next(iter(state.values())).shape[0])


def state_bytes(state: State) -> int:
    return sum(int(v.numel() * v.element_size()) for v in state.values())


def slice_state(state: State, sl: slice) -> State:
    return {k: v[sl] for k, v in state.items()}


def concat_states(states: Iterable[State]) -> State:
    states = list(states)
    return {k: torch.cat([s[k] for s in states], dim=0) for k in states[0]}


def state_to(state: State, device) -> State:
    return {k: v.to(device) for k, v in state.items()}


def tile_state(state: State, n: int) -> State:
    """The states of ``n`` items, repeating the given ones (batch dim first); contiguous copies."""
    b = state_batch(state)
    reps = -(-n // b)
    return {k: v.repeat(reps, *([1] * (v.dim() - 1)))[:n].clone() for k, v in state.items()}
