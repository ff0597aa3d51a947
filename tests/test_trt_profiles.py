import math

import pytest

from fastsam2.runtime.backends.trt_profiles import (
    Profile,
    check_profiles_cover,
    profiles_for,
    symbol_ranges,
)
from fastsam2.runtime.config import ModelConfig
from fastsam2.runtime.specs import (
    BATCH,
    GRAPH_NAMES,
    KEPT,
    MEMORY,
    POINTERS,
    POINTS,
    graph_specs,
)

CONFIG = ModelConfig()
SPECS = graph_specs(CONFIG.spec_dims())
HW = CONFIG.num_tokens


def test_profile_validates_min_opt_max():
    Profile().add("x", (1, 2), (1, 3), (1, 4))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile().add("x", (1, 5), (1, 3), (1, 4))
    with pytest.raises(ValueError, match="ranks differ"):
        Profile().add("x", (1,), (1, 3), (1, 4))


def test_profile_json_roundtrip_and_order():
    p = Profile().add("b", (1,), (2,), (3,)).add("a", (1, 1), (1, 1), (1, 1))
    q = Profile.from_json(p.to_json())
    assert q == p
    assert list(q) == ["b", "a"]
    assert q["b"].opt == (2,)
    assert p.shapes("max") == {"b": (3,), "a": (1, 1)}


@pytest.mark.parametrize("kind", ["desktop", "edge"])
def test_symbol_ranges_numbers(kind):
    r = symbol_ranges(CONFIG, kind=kind).ranges
    assert r[KEPT] == (math.ceil(0.1 * HW), round((0.5 if kind == "desktop" else 0.3) * HW), HW)
    cond = 4 if kind == "desktop" else 2
    assert r[MEMORY][0] == math.ceil(0.1 * HW)
    assert r[MEMORY][2] == (CONFIG.num_maskmem - 1 + cond) * HW
    assert r[POINTERS] == (1, 16, cond + CONFIG.max_obj_ptrs_in_encoder - 1)
    assert r[POINTS] == (1, 1, 16)
    assert r[BATCH] == (1, 1, 1)


def test_edge_caps_memory_below_desktop():
    desk = symbol_ranges(CONFIG, kind="desktop")
    edge = symbol_ranges(CONFIG, kind="edge")
    assert edge.ranges[MEMORY][2] < desk.ranges[MEMORY][2]
    assert edge.max_memory_frames == 8 and desk.max_memory_frames == 10


@pytest.mark.parametrize("name", GRAPH_NAMES)
@pytest.mark.parametrize("kind", ["desktop", "edge"])
def test_every_graph_gets_covering_profiles(name, kind):
    spec = SPECS[name]
    profiles = profiles_for(spec, CONFIG, kind=kind, max_batch=2)
    check_profiles_cover(spec, profiles)
    (p,) = profiles
    assert list(p) == spec.input_names
    for t in spec.inputs:
        for axis, sym in t.dynamic_axes.items():
            assert p[t.name].max[axis] == symbol_ranges(CONFIG, kind=kind, max_batch=2).ranges[sym][2]


def test_memory_attention_profile_shapes():
    (p,) = profiles_for(SPECS["memory_attention"], CONFIG)
    assert p["kept_idx"] == ((1, 410), (1, 2048), (1, 4096))
    assert p["memory"].max == (1, 40960, 64)
    assert p["obj_ptrs"].max == (1, 19, 256)
    assert p["vision_feats"].min == p["vision_feats"].max == (1, 256, 64, 64)


def test_uncovered_inputs_are_listed():
    spec = SPECS["memory_attention"]
    (p,) = profiles_for(spec, CONFIG)
    partial = Profile((n, p[n]) for n in p if n not in ("memory", "obj_ptrs"))
    with pytest.raises(ValueError, match=r"uncovered dynamic inputs \['memory', 'obj_ptrs'\]"):
        check_profiles_cover(spec, [partial])
    with pytest.raises(ValueError, match="no optimization profile"):
        check_profiles_cover(spec, [])


def test_wrong_fixed_axis_and_inconsistent_symbol():
    spec = SPECS["memory_attention"]
    (p,) = profiles_for(spec, CONFIG)
    bad = Profile((n, p[n]) for n in p)
    bad.add("vision_feats", (1, 256, 32, 32), (1, 256, 32, 32), (1, 256, 32, 32))
    bad.add("memory_pos_idx", (1, 1), (1, 2), (1, 3))
    with pytest.raises(ValueError) as err:
        check_profiles_cover(spec, [bad])
    assert "axis 2 is fixed at 64" in str(err.value)
    assert "memory_tokens is" in str(err.value) and "in memory_pos_idx" in str(err.value)


def test_bad_kind_and_keep():
    with pytest.raises(ValueError, match="kind must be"):
        symbol_ranges(CONFIG, kind="phone")
    with pytest.raises(ValueError, match="min_keep"):
        symbol_ranges(CONFIG, min_keep=0.0)
