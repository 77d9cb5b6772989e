"""ConvMLP: Hierarchical Convolutional MLPs for Vision (Li et al., arXiv 2109.04454).
Blocks: :mod:`hvsearch.families.convmlp.layers`; this file is the variant table.

Figures follow the official code (SHI-Labs/Convolutional-MLPs, measured with fvcore at 224; the
paper reports MACs too). Stage 0 is the conv stage at stride 4 (tokenizer width); the 3×3 stride-2
conv that ends it in the official code is stage 1's downsample here, and likewise for the MLP
stages' trailing downsamples. Stochastic depth is 0.1, restarted in every stage, because the
official model hard-codes it (its training script's ``--drop-path`` never reaches the model).
"""
from __future__ import annotations

from hvsearch.arch import ModelSpec, StageSpec
from hvsearch.arch.common import ConvDownsampleConfig, MlpFFNConfig, NoDownsampleConfig, NoFFNConfig, NormPoolHeadConfig
from hvsearch.families.convmlp.config import ConvBottleneckConfig, ConvMLPMixerConfig, ConvMLPStemConfig
from hvsearch.models.catalog import register_seed


def convmlp_spec(width: int, conv_depth: int, depths, dims, ratio: float, resolution: int = 224,
                 drop_path_rate: float = 0.1) -> ModelSpec:
    """``width``: tokenizer width C₀; ``conv_depth``: conv-stage blocks; ``depths``/``dims``: the
    three MLP stages; ``ratio``: MLP ratio of both channel MLPs in every block."""
    # The official conv-stage hidden width is the first MLP stage's width.
    conv = StageSpec(depth=conv_depth, width=width, downsample=NoDownsampleConfig(),
                     mixer=ConvBottleneckConfig(ratio=dims[0] / width), ffn=NoFFNConfig())
    mlp_stages = tuple(
        StageSpec(depth=d, width=w, downsample=ConvDownsampleConfig(bias=True, norm="none"),
                  mixer=ConvMLPMixerConfig(ratio=ratio), ffn=MlpFFNConfig(ratio=ratio))
        for d, w in zip(depths, dims)
    )
    return ModelSpec(stem=ConvMLPStemConfig(width=width), stages=(conv, *mlp_stages),
                     head=NormPoolHeadConfig(norm="layernorm"), resolution=resolution,
                     drop_path_rate=drop_path_rate, drop_path_mode="per_stage")


#               C0  conv  MLP depths   MLP dims           ratio
VARIANTS = {
    "convmlp_s": (64, 2, (2, 4, 2), (128, 256, 512), 2.0),
    "convmlp_m": (64, 3, (3, 6, 3), (128, 256, 512), 3.0),
    "convmlp_l": (96, 3, (4, 8, 3), (192, 384, 768), 3.0),
}
#               paper M, paper G, code M, code G (fvcore)
REFERENCE = {
    "convmlp_s": (9.0, 2.4, 9.023, 2.399),
    "convmlp_m": (17.4, 3.9, 17.411, 3.948),
    "convmlp_l": (42.7, 9.9, 42.728, 9.904),
}
NOTES = (
    "drop-path 0.1 per stage is hard-coded in the official model (the training flag is ignored); "
    "pyramid levels are the stage outputs (tokenizer+conv stage at stride 4, then each MLP stage's "
    "blocks), whereas the official detection backbone returns the tokenizer output, the conv "
    "stage after its stride-2 conv, and the stride-16 map before any stage-2 block, so levels "
    "0-2 differ from DetConvMLP's (level 3 matches)"
)

for _name, _args in VARIANTS.items():
    _pm, _pg, _cm, _cg = REFERENCE[_name]
    register_seed(_name, "convmlp", lambda a=_args: convmlp_spec(*a), paper_params_m=_pm, paper_gflops=_pg,
                  code_params_m=_cm, code_gflops=_cg, notes=NOTES)
