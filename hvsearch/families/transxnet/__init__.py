"""TransXNet (Lou et al., arXiv 2310.19380): the dual dynamic token mixer (``dmixer``: OSRA
attention + IDConv) and the multi-scale FFN (``msffn``)."""

TITLE = "TransXNet"  # how tables name the family
SEEDS = ("transxnet_t", "transxnet_s", "transxnet_b")
