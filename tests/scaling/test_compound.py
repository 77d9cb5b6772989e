"""Compound scaling: the rounding arithmetic, the published CMT family, FLOPs against 2.5^φ,
every member valid, and clear errors."""
import dataclasses

import pytest
import timm
import torch

from hvsearch.arch import ModelSpec
from hvsearch.cli import main
from hvsearch.models import build_model, get_seed
from hvsearch.scaling import ScalingError, ScalingRule, phi_tag, round_depth, round_width, scale, snap_resolution
from hvsearch.scaling.family import family


def test_rounding_arithmetic():
    assert round_depth(19.2, "ceil") == 20 and round_depth(19.2, "round") == 19
    assert round_depth(3.0000000001, "ceil") == 3  # float noise does not add a block
    assert round_depth(2.5, "round") == 3
    assert round_width(83.2, 8) == 80 and round_width(166.4, 8) == 168
    assert round_width(10.0, 8) == 16  # 8 would be 20% below the exact width: bumped up
    assert round_width(3.1, 1) == 3
    assert snap_resolution(257.6) == 256 and snap_resolution(194.8) == 192 and snap_resolution(3.0) == 32
    assert phi_tag(1) == "1" and phi_tag(-1) == "m1" and phi_tag(0.5) == "0p5"
    assert ScalingRule().flops_base == pytest.approx(1.2 * 1.3 ** 1.5 * 1.15 ** 2)


def test_cmt_s_reproduces_the_published_family_where_the_rule_can():
    s, b, xs = (get_seed(n).spec for n in ("cmt_s", "cmt_b", "cmt_xs"))
    up = scale(s, 1, ScalingRule(depth_mode="ceil")).spec
    assert up.depths == b.depths == (4, 4, 20, 4)
    assert up.resolution == b.resolution == 256
    assert scale(s, -1).spec.resolution == xs.resolution == 192
    # the published widths grow by ~1.19 per step, not beta=1.3: ours are wider than CMT-B's
    assert all(w > wb for w, wb in zip(up.widths, b.widths))
    assert scale(s, 0).spec.to_dict() == {**s.to_dict(), "name": "cmt_s_phi0"}


def test_widths_keep_divisibility_rules():
    s = get_seed("cmt_s").spec  # widths are multiples of 8: keep 8
    for phi in (-1.5, -1, 0.5, 1, 2):
        m = scale(s, phi).spec
        assert all(w % 8 == 0 for w in m.widths)
        for st in m.stages:
            assert st.width % st.mixer.heads == 0
    ti = get_seed("cmt_ti").spec  # 46, 92, ... are not multiples of 8: only the heads bind
    m = scale(ti, 1).spec
    assert any(w % 8 for w in m.widths)
    exact = [w * 1.3 for w in ti.widths]
    assert all(0.9 * e <= w for w, e in zip(m.widths, exact))


@pytest.mark.parametrize("name", ["cmt_s", "hire_mlp_tiny", "container_light", "transxnet_t", "convmlp_s"])
def test_flops_follow_2_5_to_the_phi(name):
    table, members = family(get_seed(name).spec, [-1, 1, 2])
    assert table["deviation_%"].abs().max() <= 15.0, table[["phi", "flops_ratio", "deviation_%"]]
    for m in members:
        spec = ModelSpec.from_yaml(m.spec.to_yaml())
        assert spec == m.spec and spec.arch_id == m.spec.arch_id
        model = build_model(spec, num_classes=4)
        out = model(torch.randn(2, 3, 32, 32))
        out.sum().backward()
        assert out.shape == (2, 4)


def _with_mixer(spec, index, **knobs):
    stages = list(spec.stages)
    stages[index] = dataclasses.replace(stages[index], mixer=dataclasses.replace(stages[index].mixer, **knobs))
    return spec.replace(stages=tuple(stages)).validate()


def test_size_bound_knobs_are_refitted_and_reported():
    # sr_ratio 7 divides CMT-S's 14x14 stage-2 map at 224 px, not the 12x12 one at 192 px
    cmt = _with_mixer(get_seed("cmt_s").spec, 2, sr_ratio=7)
    m = scale(cmt, -1)
    assert m.spec.stages[2].mixer.sr_ratio == 6
    assert m.adjustments == ("stages.2.mixer.sr_ratio 7 -> 6 (feature size 12x12)",)
    # a Hire-MLP region as large as the 7x7 last map no longer fits the 6x6 one
    hire = _with_mixer(get_seed("hire_mlp_tiny").spec, 3, region=7)
    m = scale(hire, -1)
    assert m.spec.stages[3].mixer.region == 6
    assert any(a.startswith("stages.3.mixer.region 7 -> 6") for a in m.adjustments)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"alpha": 0.9}, "alpha must be >= 1"),
    ({"gamma": 0.5}, "gamma must be >= 1"),
    ({"depth_mode": "floor"}, "depth_mode must be one of"),
])
def test_bad_constants(kwargs, fragment):
    with pytest.raises(ScalingError, match=fragment):
        ScalingRule(**kwargs)


def test_zero_depth_and_unsatisfiable_rounding_are_errors():
    with pytest.raises(ScalingError, match=r"phi=-8 gives stages\.0\.depth 0\.47, which rounds to 0"):
        scale(get_seed("hire_mlp_tiny").spec, -8)  # 2·1.2^-8 = 0.47
    # widths that are not multiples of 8 keep only the mixers' own divisors; at phi=-12 the
    # first stage's 60·1.3^-12 = 2.7 rounds to 3, below the Hire mixer's minimum width of 4
    odd = get_seed("hire_mlp_tiny").spec
    odd = odd.replace(stem=dataclasses.replace(odd.stem, width=60),
                      stages=(dataclasses.replace(odd.stages[0], width=60),) + odd.stages[1:]).validate()
    with pytest.raises(ScalingError, match=r"rounding cannot satisfy the spec's rules: stages\.0\.width must be >= 4"):
        scale(odd, -12, ScalingRule(depth_mode="ceil"))


def test_stem_width_meets_first_stage_divisor_when_stage_keeps_it():
    # TransXNet's first stage keeps the stem's map: both widths must stay even and divisible
    # by the OSRA heads (2·heads); 8 applies since the seed's widths are multiples of 8
    m = scale(get_seed("transxnet_t").spec, 0.5).spec
    assert m.stem_width == m.widths[0] and m.widths[0] % 8 == 0


def test_members_in_timm_registry_and_cli(tmp_path, capsys):
    model = timm.create_model("hvs_cmt_s_phi1", num_classes=3)
    assert model.spec.depths == scale(get_seed("cmt_s").spec, 1).spec.depths
    assert main(["scale", "--seed", "cmt_ti", "--phi", "-1", "1", "--out", str(tmp_path), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("phi,name,depths")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["cmt_ti_phi1.yaml", "cmt_ti_phim1.yaml"]
    assert main(["show", str(tmp_path / "cmt_ti_phi1.yaml"), "--format", "json"]) == 0
    assert main(["scale", "--seed", "not_a_seed"]) == 2
    assert "is neither a seed" in capsys.readouterr().err


def test_a_phi_too_large_to_build_is_an_error_not_an_allocation(capsys):
    from hvsearch.cli import main

    assert main(["scale", "--seed", "cmt_ti", "--phi", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "phi=50 gives stage depth 2 x 9.1e+03 = 1.82e+04, beyond the 1000" in err
