"""The ``mlp2x_gelu`` projector from image features to LLM embeddings (``model.mm_projector.0/2``)."""

from torch import nn


def build_projector(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
