"""ConvMLP: Hierarchical Convolutional MLPs for Vision (Li et al., arXiv 2109.04454): the
conv tokenizer (``convmlp`` stem), conv bottleneck stages (``conv_bottleneck``) and
channel-MLP/depthwise-conv blocks (``convmlp``)."""

TITLE = "ConvMLP"  # how tables name the family
SEEDS = ("convmlp_s", "convmlp_m", "convmlp_l")
