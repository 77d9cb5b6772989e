"""Tiny 4-stage specs (depth 1, widths 16-64, 32 px) of each mixer family, built with the same
parts as the family's seeds; ``widths`` and ``depth`` make wider or deeper siblings."""
from hvsearch.arch import ModelSpec, StageSpec
from hvsearch.arch.cmt import CMTAttention, CMTHead, CMTStem, IRFFN
from hvsearch.arch.common import ConvDownsample, ConvStem, MlpFFN, NoDownsample, NormPoolHead, PatchDownsample
from hvsearch.arch.container import ContainerMixer
from hvsearch.arch.hire import HireMixer
from hvsearch.models.container import container_spec
from hvsearch.models.convmlp import convmlp_spec
from hvsearch.models.transxnet import transxnet_spec

FAMILIES = ("cmt_attn", "hire", "container", "dmixer", "convmlp")
WIDTHS = (16, 32, 48, 64)


def _cmt(depths, dims, resolution):
    # reductions 2, 2, 1, 1 leave 16/4/4/1 keys at 32 px (the seeds' 8, 4, 2, 1 leave one key per
    # stage there, and attention over one key is the identity)
    stages = tuple(StageSpec(depth=d, width=w, downsample=PatchDownsample(), mixer=CMTAttention(heads=h, sr_ratio=r),
                             ffn=IRFFN(ratio=2.0))
                   for d, w, h, r in zip(depths, dims, (1, 2, 2, 4), (2, 2, 1, 1)))
    return ModelSpec(stem=CMTStem(width=dims[0]), stages=stages, head=CMTHead(features=4 * dims[-1]),
                     resolution=resolution, drop_path_rate=0.1)


def _hire(depths, dims, resolution):
    # regions 2, 2, 2, 1 fit the 8/4/2/1 maps at 32 px (the seeds' 4, 3, 3, 2 need 224 px)
    stages = tuple(
        StageSpec(depth=d, width=w,
                  downsample=NoDownsample() if i == 0 else ConvDownsample(bias=True, norm="batchnorm", act=True),
                  mixer=HireMixer(region=p, step_stride=2, step_dilation=1 if p > 1 else 0), ffn=MlpFFN(ratio=2.0))
        for i, (d, w, p) in enumerate(zip(depths, dims, (2, 2, 2, 1)))
    )
    stem = ConvStem(width=dims[0], kernel=7, padding=2, bias=True, norm="batchnorm", act=True)
    return ModelSpec(stem=stem, stages=stages, head=NormPoolHead(norm="batchnorm"), resolution=resolution)


def tiny(family: str, widths=WIDTHS, depth: int = 1, resolution: int = 32) -> ModelSpec:
    depths = (depth,) * 4
    if family == "cmt_attn":
        spec = _cmt(depths, widths, resolution)
    elif family == "hire":
        spec = _hire(depths, widths, resolution)
    elif family == "container":
        mixers = tuple(ContainerMixer(static="dwconv", dynamic=i > 1, heads=2, kernel=3) for i in range(4))
        spec = container_spec(depths, widths, mixers, (2, 2, 2, 2), resolution=resolution)
    elif family == "dmixer":
        spec = transxnet_spec(depths, widths, (1, 2, 2, 4), (2, 2, 2, 2), (2, 2, 2, 2), 0.1, resolution=resolution)
    elif family == "convmlp":
        spec = convmlp_spec(widths[0], depth, depths[1:], widths[1:], 2.0, resolution=resolution)
    else:
        raise KeyError(family)
    return spec.replace(num_classes=10, name=f"tiny_{family}").validate()
