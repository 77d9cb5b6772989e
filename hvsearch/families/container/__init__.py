"""Container: Context Aggregation Network (Gao et al., NeurIPS 2021, arXiv 2106.01401): static
and dynamic affinity mixed by a learned weight (``container``)."""

TITLE = "Container"  # how tables name the family
SEEDS = ("container_light", "container")
