"""Helpers shared by the model tests."""
import torch


def saved_bytes(fn):
    """-> (fn(), bytes of the tensors autograd saves for the backward pass while ``fn`` runs)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]
