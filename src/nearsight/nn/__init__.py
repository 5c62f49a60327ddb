"""Building blocks shared by models: scatter sums, cutoff envelopes, MLPs, exact constants."""

from .blocks import MLP, ExactConstants, cosine_cutoff, scatter_sum

__all__ = ["MLP", "ExactConstants", "cosine_cutoff", "scatter_sum"]
