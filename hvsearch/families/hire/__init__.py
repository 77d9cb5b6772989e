"""Hire-MLP: Vision MLP via Hierarchical Rearrangement (Guo et al., CVPR 2022, arXiv 2108.13341):
inner-region rearrangement with cross-region shifts (``hire``)."""

TITLE = "Hire-MLP"  # how tables name the family
SEEDS = ("hire_mlp_tiny", "hire_mlp_small", "hire_mlp_base", "hire_mlp_large")
