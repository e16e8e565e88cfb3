import copy

import pytest

TINY = dict(
    name="tiny",
    model=dict(num_layers=4, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
               vocab_size=64),
    hardware=dict(preset="cpu", num_gpus=1),
    training=dict(micro_batch_size=2, global_batch_size=2, zero_stage=0, activation_bytes=4),
    tasks=dict(u=dict(samples=10, segments=[dict(name="sys", kind="text", tokens=3),
                                            dict(name="image", kind="image", tokens=10),
                                            dict(name="ans", kind="text", tokens=5, target=True)])),
    schedules=dict(
        baseline={},
        himix={"u": {"method": "himix", "from_layer": 1}},
        hmgen={"u": {"method": "hmgen", "shallow_layers": [1, 2]}},
        drop={"u": {"method": "drop", "from_layer": 1, "keep": 0.5}},
        pyramid={"u": {"method": "pyramid", "stages": [[1, 0.6], [2, 0.3]], "selection": "attention"}},
        table={"u": {"layers": {"0": {"image": "full"}, "1-2": {"image": {"mode": "kv_only", "keep": 0.5}},
                                "3": {"image": {"mode": "skip", "keep": 0.5}}},
                     "separate_image_projections": True}},
    ),
)


@pytest.fixture
def tiny_doc():
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny(tiny_doc):
    from trsim.simulator import scenario_from_dict
    return scenario_from_dict(tiny_doc)


# ``--hypothesis-profile=long``: every hypothesis test (the fuzz tests included) runs many more examples.
try:
    from hypothesis import settings as _settings
    _settings.register_profile("long", max_examples=20_000, deadline=None)
except ImportError:  # pragma: no cover
    pass
