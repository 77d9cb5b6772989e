"""CMT: Convolutional Neural Networks Meet Vision Transformers (Guo et al., CVPR 2022,
arXiv 2107.06263). Blocks: :mod:`hvsearch.families.cmt.layers`; this file is the variant table.

Figures follow the official code (huawei-noah/Efficient-AI-Backbones, cmt_pytorch). CMT-S has
26.26M parameters in the code against 25.1M in the paper: we follow the code. Each model's
relative-position-bias tables are sized for its own resolution (160/192/224/256), which is why the
parameter count depends on it; they are resized at run time for other input sizes.
"""
from __future__ import annotations

from hvsearch.arch import ModelSpec, StageSpec
from hvsearch.families.cmt.config import CMTAttentionConfig, CMTHeadConfig, CMTStemConfig, IRFFNConfig
from hvsearch.arch.common import PatchDownsampleConfig
from hvsearch.models.catalog import register_seed

HEADS = (1, 2, 4, 8)
SR_RATIOS = (8, 4, 2, 1)


def cmt_spec(stem: int, depths, dims, ratio: float, resolution: int, dropout: float = 0.1,
             drop_path_rate: float = 0.1) -> ModelSpec:
    stages = tuple(
        StageSpec(depth=d, width=w, downsample=PatchDownsampleConfig(), mixer=CMTAttentionConfig(heads=h, sr_ratio=sr),
                  ffn=IRFFNConfig(ratio=ratio))
        for d, w, h, sr in zip(depths, dims, HEADS, SR_RATIOS)
    )
    return ModelSpec(stem=CMTStemConfig(width=stem), stages=stages, head=CMTHeadConfig(features=1280, dropout=dropout),
                     resolution=resolution, drop_path_rate=drop_path_rate)


#          stem  depths          dims                  R     res  dropout drop-path
VARIANTS = {
    "cmt_ti": (16, (2, 2, 10, 2), (46, 92, 184, 368), 3.6, 160, 0.1, 0.1),
    "cmt_xs": (16, (3, 3, 12, 3), (52, 104, 208, 416), 3.77, 192, 0.1, 0.08),
    "cmt_s": (32, (3, 3, 16, 3), (64, 128, 256, 512), 4.0, 224, 0.1, 0.1),
    "cmt_b": (38, (4, 4, 20, 4), (76, 152, 304, 608), 4.0, 256, 0.3, 0.25),
}
#          paper M, paper G, code M, code G (fvcore)
REFERENCE = {
    "cmt_ti": (9.5, 0.6, 9.492, 0.652),
    "cmt_xs": (15.2, 1.5, 15.247, 1.575),
    "cmt_s": (25.1, 4.0, 26.256, 4.087),
    "cmt_b": (45.7, 9.3, 45.715, 9.425),
}
NOTES = {
    "cmt_s": "params follow the official code (26.26M); the paper states 25.1M",
}

for _name, _args in VARIANTS.items():
    _pm, _pg, _cm, _cg = REFERENCE[_name]
    register_seed(_name, "cmt", lambda a=_args: cmt_spec(*a), paper_params_m=_pm, paper_gflops=_pg,
                  code_params_m=_cm, code_gflops=_cg, notes=NOTES.get(_name, ""))
