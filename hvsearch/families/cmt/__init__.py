"""CMT: Convolutional Neural Networks Meet Vision Transformers (Guo et al., CVPR 2022, arXiv
2107.06263): lightweight multi-head self-attention (``cmt_attn``), the inverted-residual FFN
(``irffn``), CMT's stem and head."""

TITLE = "CMT"  # how tables name the family
SEEDS = ("cmt_ti", "cmt_xs", "cmt_s", "cmt_b")
