"""Building blocks shared by models: scatter sums, cutoff envelopes, MLPs, exact constants."""

from .blocks import MLP, ExactConstants, cosine_cutoff, scatter_sum
from .tracing import buffer_value, is_tracing

__all__ = ["MLP", "ExactConstants", "buffer_value", "cosine_cutoff", "is_tracing", "scatter_sum"]
