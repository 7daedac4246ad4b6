"""Weight-sharing supernets: one over-parameterised network that holds every candidate of a
search space, so candidates can be evaluated with inherited weights."""
