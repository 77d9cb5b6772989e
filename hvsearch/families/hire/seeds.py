"""Hire-MLP: Vision MLP via Hierarchical Rearrangement (Guo et al., CVPR 2022, arXiv 2108.13341).
Mixer: :mod:`hvsearch.families.hire.layers`; this file is the variant table.

Figures follow the official code (ggjy/Hire-Wave-MLP.pytorch, ``mlp_based/hire_mlp.py``): a 7×7
stride-4 conv stem (padding 2, bias, BN, ReLU), 3×3 stride-2 conv downsamples (bias, BN, ReLU),
BN pre-norm blocks with a 4× MLP, a BN → pool → linear head. Region sizes 4, 3, 3, 2 do not divide
the 28/14/7 maps at 224 px, so the circular region padding is active in stages 2-4.
"""
from __future__ import annotations

from hvsearch.arch import ModelSpec, StageSpec
from hvsearch.arch.common import (
    ConvDownsampleConfig,
    ConvStemConfig,
    MlpFFNConfig,
    NoDownsampleConfig,
    NormPoolHeadConfig,
)
from hvsearch.families.hire.config import HireMixerConfig
from hvsearch.models.catalog import register_seed

REGIONS = (4, 3, 3, 2)
STEP_STRIDES = (2, 2, 3, 2)
STEP_DILATIONS = (2, 2, 1, 1)


def hire_mlp_spec(depths, dims, drop_path_rate: float, resolution: int = 224, mlp_ratio: float = 4.0) -> ModelSpec:
    stages = tuple(
        StageSpec(depth=d, width=w,
                  downsample=NoDownsampleConfig() if i == 0 else ConvDownsampleConfig(bias=True, norm="batchnorm", act=True),
                  mixer=HireMixerConfig(region=p, step_stride=ss, step_dilation=sd, pad_mode="circular"),
                  ffn=MlpFFNConfig(ratio=mlp_ratio, bias=True))
        for i, (d, w, p, ss, sd) in enumerate(zip(depths, dims, REGIONS, STEP_STRIDES, STEP_DILATIONS))
    )
    stem = ConvStemConfig(width=dims[0], kernel=7, padding=2, bias=True, norm="batchnorm", act=True)
    return ModelSpec(stem=stem, stages=stages, head=NormPoolHeadConfig(norm="batchnorm"), resolution=resolution,
                     drop_path_rate=drop_path_rate, drop_path_mode="global")


#                    depths          dims                 drop-path
VARIANTS = {
    "hire_mlp_tiny": ((2, 2, 4, 2), (64, 128, 320, 512), 0.0),
    "hire_mlp_small": ((3, 4, 10, 3), (64, 128, 320, 512), 0.1),
    "hire_mlp_base": ((4, 6, 24, 3), (64, 128, 320, 512), 0.2),
    "hire_mlp_large": ((4, 6, 24, 3), (96, 192, 384, 768), 0.3),
}
#                    paper M, paper G, code M, code G (fvcore)
REFERENCE = {
    "hire_mlp_tiny": (18, 2.1, 18.042, 2.149),
    "hire_mlp_small": (33, 4.2, 33.114, 4.240),
    "hire_mlp_base": (58, 8.1, 58.227, 8.125),
    "hire_mlp_large": (96, 13.4, 95.724, 13.442),
}
NOTES = {
    "hire_mlp_tiny": "drop-path 0.0 from the official README train command",
    "hire_mlp_small": "drop-path 0.1 is our choice: the repo gives no Small classification command "
                      "(its ADE20K config uses 0.2); between Tiny's 0.0 and Base's 0.2",
    "hire_mlp_base": "drop-path 0.2 from the official README train command",
    "hire_mlp_large": "drop-path 0.3 is our choice: the repo gives no Large train command; "
                      "one step above Base's 0.2 for the wider model",
}

for _name, (_depths, _dims, _dpr) in VARIANTS.items():
    _pm, _pg, _cm, _cg = REFERENCE[_name]
    register_seed(_name, "hire", lambda d=_depths, w=_dims, r=_dpr: hire_mlp_spec(d, w, r),
                  paper_params_m=_pm, paper_gflops=_pg, code_params_m=_cm, code_gflops=_cg,
                  notes=NOTES.get(_name, ""))
