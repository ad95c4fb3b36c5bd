"""Presets timm-style: each a registered function with a declared record, and the record
says what the built model is."""

import inspect

import pytest
import torch

from morphoscale.errors import ConfigError
from morphoscale.models import registry
from morphoscale.models.registry import PRESETS, create_model, preset_info

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_declared_record_is_what_the_model_is(name):
    info = preset_info(name)
    with torch.device("meta"):
        model = create_model(name, CHANNELS, n_classes=3)
    cfg = model.cfg
    assert model.default_pooling == info.default_readout
    assert model.multi_view == info.multi_view
    assert getattr(cfg, "img_size", info.input_size) == info.input_size
    assert bool(getattr(cfg, "adabn", False)) == info.per_batch_norm
    assert bool(getattr(cfg, "channel_agnostic", False)) == info.channel_agnostic
    assert info.reconstructs == hasattr(cfg, "mask_ratio")  # the masked models


def test_every_preset_is_a_function_grep_finds():
    for name in PRESETS:
        fn = getattr(registry, name)
        assert inspect.isfunction(fn) and f"def {name}(" in inspect.getsource(fn)


def test_unknown_preset_is_one_line():
    with pytest.raises(ConfigError, match="unknown model preset 'mae_vit_huge'"):
        create_model("mae_vit_huge", CHANNELS)
    with pytest.raises(ConfigError, match="unknown model preset"):
        preset_info("nope")


def test_a_preset_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_preset("mae", 64)(registry.mae_vit_tiny_patch8_64)


def test_one_list_of_aligners_feeds_the_estimators_the_config_and_the_docs():
    import re
    from pathlib import Path

    from morphoscale.flow.config import MapSpec
    from morphoscale.maps import ALIGNER_SUMMARIES, DEFAULT_ALIGNER, aligner_help
    from morphoscale.maps.align import ALIGNERS

    assert list(ALIGNERS) == list(ALIGNER_SUMMARIES) and DEFAULT_ALIGNER in ALIGNERS
    assert all(f"{name}:" in aligner_help() for name in ALIGNERS)
    for name in ALIGNERS:
        assert MapSpec(align=name).align == name
    with pytest.raises(ValueError, match="unknown alignment 'tvm'"):
        MapSpec(align="tvm")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "map.md").read_text()
    assert sorted(re.findall(r"^   \| `(\w+)`", doc, flags=re.M)) == sorted(
        ALIGNERS
    )  # every aligner documented, no other
