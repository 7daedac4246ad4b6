"""Weight-sharing supernets: one over-parameterised network that holds every candidate of a
search space, so candidates can be evaluated with inherited weights."""

from nas_plugin.supernets.nb201 import NB201Supernet, binary_gates, derive, gumbel_hard, sample_path

__all__ = ["NB201Supernet", "binary_gates", "derive", "gumbel_hard", "sample_path"]
