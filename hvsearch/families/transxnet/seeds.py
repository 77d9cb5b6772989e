"""TransXNet: Learning Both Global and Local Dynamics with a Dual Dynamic Token Mixer for Visual
Recognition (Lou et al., arXiv 2310.19380). Blocks: :mod:`hvsearch.families.transxnet.layers`; this file is
the variant table.

Figures follow the official code (LMMMEng/TransXNet, ``models/transxnet.py``), built at 224 px: the
relative-position encodings are sized for the build resolution (they dominate the parameter
difference between resolutions) and resized at run time for other input sizes. Drop-path rates
are those of the training scripts.
"""
from __future__ import annotations

from hvsearch.arch import ModelSpec, StageSpec
from hvsearch.arch.common import ConvDownsampleConfig, ConvStemConfig, NoDownsampleConfig, NormPoolHeadConfig
from hvsearch.families.transxnet.config import DMixerConfig, MSFFNConfig
from hvsearch.models.catalog import register_seed

SR_RATIOS = (8, 4, 2, 1)
KERNEL = 7


def transxnet_spec(depths, dims, heads, groups, ratios, drop_path_rate: float, resolution: int = 224) -> ModelSpec:
    stages = tuple(
        StageSpec(depth=d, width=w,
                  downsample=NoDownsampleConfig() if i == 0 else ConvDownsampleConfig(bias=False, norm="batchnorm"),
                  mixer=DMixerConfig(heads=h, sr_ratio=sr, groups=g, kernel=KERNEL), ffn=MSFFNConfig(ratio=r))
        for i, (d, w, h, sr, g, r) in enumerate(zip(depths, dims, heads, SR_RATIOS, groups, ratios))
    )
    stem = ConvStemConfig(width=dims[0], kernel=7, padding=3, bias=False, norm="batchnorm", act=False)
    return ModelSpec(stem=stem, stages=stages, head=NormPoolHeadConfig(norm="groupnorm"), resolution=resolution,
                     drop_path_rate=drop_path_rate)


#                 depths          dims                 OSRA heads      IDConv G      MS-FFN ratio  drop-path
VARIANTS = {
    "transxnet_t": ((3, 3, 9, 3), (48, 96, 224, 448), (1, 2, 4, 8), (2, 2, 2, 2), (4, 4, 4, 4), 0.1),
    "transxnet_s": ((4, 4, 12, 4), (64, 128, 320, 512), (1, 2, 5, 8), (2, 2, 3, 4), (6, 6, 4, 4), 0.2),
    "transxnet_b": ((4, 4, 21, 4), (76, 152, 336, 672), (2, 4, 8, 16), (2, 2, 4, 4), (8, 8, 4, 4), 0.4),
}
#                 paper M, paper G, code M, code G (fvcore)
REFERENCE = {
    "transxnet_t": (12.8, 1.8, 12.835, 1.846),
    "transxnet_s": (26.9, 4.5, 26.864, 4.686),
    "transxnet_b": (48.0, 8.3, 48.009, 8.474),
}
COMMON_NOTES = (
    "follows the official code where the paper/docstring differ: stem conv k7 s4 padding 3 (docstring: "
    "padding 2, LN2d norm), GroupNorm(1) norms, layer scale with a per-channel bias (a 1x1 depthwise conv "
    "in the code, an affine here, so fvcore counts ~0.1% fewer FLOPs); IDConv runs its squeeze once over "
    "the K×K pooled cells plus the global mean (the code calls it twice; equal in eval, BN batch "
    "statistics pooled in training); the kernel mix is an element-wise mul+sum as in the code (free "
    "under fvcore's convention); fvcore FLOPs of the code exceed the paper's figure"
)
NOTES = {
    "transxnet_s": COMMON_NOTES + "; fvcore gives 4.69G against the paper's 4.5G",
    "transxnet_b": COMMON_NOTES + "; fvcore gives 8.47G against the paper's 8.3G",
}

CROP_PCT = {"transxnet_b": 0.95}  # the official scripts' evaluation crop; 0.9 for the others

for _name, _args in VARIANTS.items():
    _pm, _pg, _cm, _cg = REFERENCE[_name]
    register_seed(_name, "transxnet", lambda a=_args: transxnet_spec(*a), paper_params_m=_pm, paper_gflops=_pg,
                  code_params_m=_cm, code_gflops=_cg, notes=NOTES.get(_name, COMMON_NOTES),
                  crop_pct=CROP_PCT.get(_name, 0.9))
