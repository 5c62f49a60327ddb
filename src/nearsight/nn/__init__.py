"""Building blocks shared by models: scatter sums, cutoff envelopes, MLPs."""

from .blocks import MLP, cosine_cutoff, scatter_sum

__all__ = ["MLP", "cosine_cutoff", "scatter_sum"]
