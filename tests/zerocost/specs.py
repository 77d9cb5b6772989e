"""Tiny 4-stage specs (depth 1, widths 16-64, 32 px) of each mixer family, built with the same
parts as the family's seeds; ``widths`` and ``depth`` make wider or deeper siblings."""
from hvsearch.arch import ModelSpec, StageSpec
from hvsearch.families.cmt.config import CMTAttentionConfig, CMTHeadConfig, CMTStemConfig, IRFFNConfig
from hvsearch.arch.common import (
    ConvDownsampleConfig,
    ConvStemConfig,
    MlpFFNConfig,
    NoDownsampleConfig,
    NormPoolHeadConfig,
    PatchDownsampleConfig,
)
from hvsearch.families.container.config import ContainerMixerConfig
from hvsearch.families.hire.config import HireMixerConfig
from hvsearch.families.container.seeds import container_spec
from hvsearch.families.convmlp.seeds import convmlp_spec
from hvsearch.families.transxnet.seeds import transxnet_spec

FAMILIES = ("cmt_attn", "hire", "container", "dmixer", "convmlp")
WIDTHS = (16, 32, 48, 64)


def _cmt(depths, dims, resolution):
    # reductions 2, 2, 1, 1 leave 16/4/4/1 keys at 32 px (the seeds' 8, 4, 2, 1 leave one key per
    # stage there, and attention over one key is the identity)
    stages = tuple(StageSpec(depth=d, width=w, downsample=PatchDownsampleConfig(), mixer=CMTAttentionConfig(heads=h, sr_ratio=r),
                             ffn=IRFFNConfig(ratio=2.0))
                   for d, w, h, r in zip(depths, dims, (1, 2, 2, 4), (2, 2, 1, 1)))
    return ModelSpec(stem=CMTStemConfig(width=dims[0]), stages=stages, head=CMTHeadConfig(features=4 * dims[-1]),
                     resolution=resolution, drop_path_rate=0.1)


def _hire(depths, dims, resolution):
    # regions 2, 2, 2, 1 fit the 8/4/2/1 maps at 32 px (the seeds' 4, 3, 3, 2 need 224 px)
    stages = tuple(
        StageSpec(depth=d, width=w,
                  downsample=NoDownsampleConfig() if i == 0 else ConvDownsampleConfig(bias=True, norm="batchnorm", act=True),
                  mixer=HireMixerConfig(region=p, step_stride=2, step_dilation=1 if p > 1 else 0), ffn=MlpFFNConfig(ratio=2.0))
        for i, (d, w, p) in enumerate(zip(depths, dims, (2, 2, 2, 1)))
    )
    stem = ConvStemConfig(width=dims[0], kernel=7, padding=2, bias=True, norm="batchnorm", act=True)
    return ModelSpec(stem=stem, stages=stages, head=NormPoolHeadConfig(norm="batchnorm"), resolution=resolution)


def tiny(family: str, widths=WIDTHS, depth: int = 1, resolution: int = 32) -> ModelSpec:
    depths = (depth,) * 4
    if family == "cmt_attn":
        spec = _cmt(depths, widths, resolution)
    elif family == "hire":
        spec = _hire(depths, widths, resolution)
    elif family == "container":
        mixers = tuple(ContainerMixerConfig(static="dwconv", dynamic=i > 1, heads=2, kernel=3) for i in range(4))
        spec = container_spec(depths, widths, mixers, (2, 2, 2, 2), resolution=resolution)
    elif family == "dmixer":
        spec = transxnet_spec(depths, widths, (1, 2, 2, 4), (2, 2, 2, 2), (2, 2, 2, 2), 0.1, resolution=resolution)
    elif family == "convmlp":
        spec = convmlp_spec(widths[0], depth, depths[1:], widths[1:], 2.0, resolution=resolution)
    else:
        raise KeyError(family)
    return spec.replace(num_classes=10, name=f"tiny_{family}").validate()
