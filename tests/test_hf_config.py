"""model: {hf_config: ...} reads real published config.json files (fixtures modelled on them), with
transformers' configuration classes and with the built-in fallback, and refuses what it cannot price."""
import builtins
import json
import os
from pathlib import Path

import pytest
import yaml

from trsim.cli import main
from trsim.simulator import scenario_from_dict

DATA = Path(__file__).parent / "data" / "hf_configs"

# (fixture, expected ModelSpec fields): values from each checkpoint's published config.json and, where the file
# omits them, the model type's defaults (LLaMA's for LLaVA's text_config, Gemma's tied embeddings, GPT-2's 4 x hidden)
EXPECTED = {
    "llava-1.5-7b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, head_dim=128,
                         intermediate_size=11008, vocab_size=32064, tie_word_embeddings=False, mlp="swiglu"),
    "llava-no-type": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                          intermediate_size=11008, vocab_size=32064, mlp="swiglu"),
    "janus-pro-7b": dict(num_layers=30, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                         head_dim=128, intermediate_size=11008, vocab_size=102400, mlp="swiglu"),
    "vila1.5-3b": dict(num_layers=32, hidden_size=2560, num_attention_heads=20, num_key_value_heads=20, head_dim=128,
                       intermediate_size=6912, vocab_size=32000, tie_word_embeddings=False, mlp="swiglu"),
    "vila-llm-folder": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, intermediate_size=11008,
                            vocab_size=32000, mlp="swiglu"),
    "qwen2-vl-7b": dict(num_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, head_dim=128,
                        intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, mlp="swiglu"),
    "emu3-gen": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=14336, vocab_size=184622, tie_word_embeddings=False, mlp="swiglu"),
    "chameleon-7b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                         intermediate_size=11008, vocab_size=65536, tie_word_embeddings=False, mlp="swiglu"),
    "gemma-2b": dict(num_layers=18, hidden_size=2048, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                     intermediate_size=16384, vocab_size=256000, tie_word_embeddings=True, mlp="geglu"),
    "gpt2": dict(num_layers=12, hidden_size=768, num_attention_heads=12, num_key_value_heads=12, head_dim=64,
                 intermediate_size=3072, vocab_size=50257, tie_word_embeddings=True, mlp="gelu"),
    # squared-ReLU MLPs of two matrices, not gated: priced as such (a gated price would be 1.5 x their FLOPs)
    "fuyu-8b": dict(num_layers=36, hidden_size=4096, num_attention_heads=64, num_key_value_heads=64, head_dim=64,
                    intermediate_size=16384, vocab_size=262144, tie_word_embeddings=False, mlp="gelu"),
    "nemotron-mini-4b": dict(num_layers=32, hidden_size=3072, num_attention_heads=24, num_key_value_heads=8,
                             head_dim=128, intermediate_size=9216, vocab_size=256000, tie_word_embeddings=False,
                             mlp="gelu"),
    # multi-query attention as a switch (one K/V head), other spellings of the shape
    "falcon-7b": dict(num_layers=32, hidden_size=4544, num_attention_heads=71, num_key_value_heads=1, head_dim=64,
                      intermediate_size=18176, vocab_size=65024, mlp="gelu"),
    "chatglm3-6b": dict(num_layers=28, hidden_size=4096, num_attention_heads=32, num_key_value_heads=2, head_dim=128,
                        intermediate_size=13696, vocab_size=65024, tie_word_embeddings=False, mlp="swiglu"),
    "mpt-7b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                   intermediate_size=16384, vocab_size=50432, mlp="gelu"),
    # Molmo: one fused gate-and-up projection of intermediate_size, split in two (as Qwen-VL's)
    "molmo-7b-d": dict(num_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, head_dim=128,
                       intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, mlp="swiglu"),
    # Phi-2's original remote-code config (model_type phi-msft): fc1/fc2 with gelu_new, not gated
    "phi-2-msft": dict(num_layers=32, hidden_size=2560, num_attention_heads=32, num_key_value_heads=32, head_dim=80,
                       intermediate_size=10240, vocab_size=51200, mlp="gelu"),
    # Falcon's first remote-code releases (model_type RefinedWeb / RefinedWebModel, RWConfig's n_head, n_layer):
    # read as falcon, a two-matrix GELU MLP of 4 x hidden and a tied LM head, not as an unknown gated type
    "falcon-40b-refinedweb": dict(num_layers=60, hidden_size=8192, num_attention_heads=128, num_key_value_heads=8,
                                  head_dim=64, intermediate_size=32768, vocab_size=65024, tie_word_embeddings=True,
                                  mlp="gelu"),
    "falcon-7b-refinedwebmodel": dict(num_layers=32, hidden_size=4544, num_attention_heads=71, num_key_value_heads=1,
                                      head_dim=64, intermediate_size=18176, vocab_size=65024,
                                      tie_word_embeddings=True, mlp="gelu"),
    # Meta-style spellings (dim, n_layers, n_heads, n_kv_heads, ffn_dim)
    "falcon-perception": dict(num_layers=28, hidden_size=1024, num_attention_heads=16, num_key_value_heads=8,
                              head_dim=128, intermediate_size=3072, vocab_size=65536, mlp="swiglu"),
    # files that omit tie_word_embeddings on model types that tie by default (the fallback must know it too)
    "gemma2-2b": dict(num_layers=26, hidden_size=2304, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                      intermediate_size=9216, vocab_size=256000, tie_word_embeddings=True, mlp="geglu"),
    "gemma3-27b": dict(num_layers=62, hidden_size=5376, num_attention_heads=32, num_key_value_heads=16, head_dim=128,
                       intermediate_size=21504, vocab_size=262208, tie_word_embeddings=True, mlp="geglu"),
    "opt-125m": dict(num_layers=12, hidden_size=768, num_attention_heads=12, num_key_value_heads=12, head_dim=64,
                     intermediate_size=3072, vocab_size=50272, tie_word_embeddings=True, mlp="gelu"),
    # LLaVA-NeXT with Mistral inside: llava-hf's text_config omits every value equal to Mistral's default
    "llava-v1.6-mistral-7b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                                  head_dim=128, intermediate_size=14336, vocab_size=32064, tie_word_embeddings=False,
                                  mlp="swiglu"),
    # an omni model's decoder two levels down: thinker_config.text_config
    "qwen2.5-omni-7b-awq": dict(num_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
                                head_dim=128, intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False,
                                mlp="swiglu"),
    # GLM-4.1V: a glm4v config with its decoder's sizes at the top level
    "glm-4.1v-9b": dict(num_layers=40, hidden_size=4096, num_attention_heads=32, num_key_value_heads=2, head_dim=128,
                        intermediate_size=13696, vocab_size=151552, tie_word_embeddings=False, mlp="swiglu"),
    # GPT-J: n_inner null = 4 x hidden, head_dim 256, two-matrix GELU MLP, untied (6.05e9 parameters)
    "gpt-j-6b": dict(num_layers=28, hidden_size=4096, num_attention_heads=16, num_key_value_heads=16, head_dim=256,
                     intermediate_size=16384, vocab_size=50400, tie_word_embeddings=False, mlp="gelu"),
    # Qwen-VL's LLM: intermediate_size is the two gated projections together (its code halves it)
    "qwen-vl-chat": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                         head_dim=128, intermediate_size=11008, vocab_size=151936, tie_word_embeddings=False,
                         mlp="swiglu"),
    # --- VLM and unified-model configs added 2026-11-28 (third round; see SOURCES.md) ---
    # Qwen2.5-VL and Qwen3-VL: the decoder at the top level (2.5) or in text_config (3), tied at these sizes
    "qwen2.5-vl-3b": dict(num_layers=36, hidden_size=2048, num_attention_heads=16, num_key_value_heads=2, head_dim=128,
                          intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True, mlp="swiglu"),
    "qwen3-vl-4b": dict(num_layers=36, hidden_size=2560, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                        intermediate_size=9728, vocab_size=151936, tie_word_embeddings=True, mlp="swiglu"),
    # InternVL: llm_config holding a remote-code InternLM2 config, or a Qwen2 one beside a vision_config whose own
    # (unused) expert settings (num_experts 8, use_moe false) are not the decoder's
    "internvl2.5-2b": dict(num_layers=24, hidden_size=2048, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                           intermediate_size=8192, vocab_size=92553, tie_word_embeddings=False, mlp="swiglu"),
    "internvl3-1b": dict(num_layers=24, hidden_size=896, num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                         intermediate_size=4864, vocab_size=151674, tie_word_embeddings=False, mlp="swiglu"),
    # the LLaVA codebase's own configs: the decoder's keys at the top level under model_type llava, llava_llama (used
    # to be refused for want of VILA's llm/ sub-folder) and llava_qwen (Qwen2-style: intermediate_size not halved)
    "llava-v1.6-vicuna-7b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                                 head_dim=128, intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False,
                                 mlp="swiglu"),
    "llava-llama-vicuna-7b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                                  head_dim=128, intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False,
                                  mlp="swiglu"),
    "llava-next-interleave-qwen-0.5b": dict(num_layers=24, hidden_size=1024, num_attention_heads=16,
                                            num_key_value_heads=16, head_dim=64, intermediate_size=2816,
                                            vocab_size=151936, tie_word_embeddings=True, mlp="swiglu"),
    # Bunny's bunny-phi is Phi-2 (two-matrix gelu_new MLP), not a gated one (used to be priced as GeGLU: 3.62e9
    # parameters instead of 2.78e9)
    "bunny-v1.0-3b": dict(num_layers=32, hidden_size=2560, num_attention_heads=32, num_key_value_heads=32, head_dim=80,
                          intermediate_size=10240, vocab_size=51200, tie_word_embeddings=False, mlp="gelu"),
    "phi-3-vision-128k": dict(num_layers=32, hidden_size=3072, num_attention_heads=32, num_key_value_heads=32,
                              head_dim=96, intermediate_size=8192, vocab_size=32064, tie_word_embeddings=False,
                              mlp="swiglu"),
    # PaliGemma 2: the top level's hidden_size (2048) is stale; the Gemma 2 text_config (2304, head_dim 256 by
    # default) is the decoder
    "paligemma2-3b": dict(num_layers=26, hidden_size=2304, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                          intermediate_size=9216, vocab_size=257216, tie_word_embeddings=True, mlp="geglu"),
    # Pixtral: a Mistral text_config that omits the head count (32) and gives head_dim 128, not 5120 / 32
    "pixtral-12b": dict(num_layers=40, hidden_size=5120, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                        intermediate_size=14336, vocab_size=131072, tie_word_embeddings=False, mlp="swiglu"),
    # Idefics 2 / 3: text_configs that omit nearly every value equal to Mistral's / LLaMA's default
    "idefics2-8b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                        intermediate_size=14336, vocab_size=32003, tie_word_embeddings=False, mlp="swiglu"),
    "idefics3-8b": dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                        intermediate_size=14336, vocab_size=128259, tie_word_embeddings=False, mlp="swiglu"),
}

# Published parameter counts of the language models inside those VLMs (model cards / the Hub's count): the shape read
# from the file must price the same decoder, embeddings and LM head included.
PUBLISHED_PARAMETERS = {
    "qwen2.5-vl-3b": 3.09e9,     # Qwen2.5-3B
    "qwen3-vl-4b": 4.02e9,       # Qwen3-4B
    "internvl2.5-2b": 1.89e9,    # InternLM2.5-1.8B (+9 added tokens)
    "llava-v1.6-vicuna-7b": 6.74e9,   # Vicuna-7B v1.5 (LLaMA-2-7B)
    "llava-llama-vicuna-7b": 6.74e9,
    "llava-next-interleave-qwen-0.5b": 0.464e9,   # Qwen1.5-0.5B
    "bunny-v1.0-3b": 2.78e9,     # Phi-2
    "phi-3-vision-128k": 3.82e9,  # Phi-3-mini
    "paligemma2-3b": 2.61e9,     # Gemma 2 2B
    "pixtral-12b": 12.2e9,       # Mistral NeMo 12B
    "idefics2-8b": 7.24e9,       # Mistral-7B
    "idefics3-8b": 8.03e9,       # Llama 3.1 8B
}


@pytest.fixture(params=["transformers", "fallback"])
def backend(request, monkeypatch):
    if request.param == "fallback":
        real = builtins.__import__

        def no_transformers(name, *a, **k):
            if name == "transformers" or name.startswith("transformers."):
                raise ImportError("transformers hidden by the test")
            return real(name, *a, **k)
        monkeypatch.setattr(builtins, "__import__", no_transformers)
    else:
        pytest.importorskip("transformers")
    return request.param


def _scenario(tiny_doc, path, **model):
    tiny_doc["model"] = {"hf_config": str(path), **model}
    tiny_doc["schedules"] = {"baseline": {}}
    return tiny_doc


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_configs(tiny_doc, backend, name):
    target = DATA / name if name == "vila-llm-folder" else DATA / name / "config.json"
    scn = scenario_from_dict(_scenario(tiny_doc, target))
    got = scn.model.model_dump()
    for k, v in EXPECTED[name].items():
        assert got[k] == v, (name, backend, k, got[k], v)


@pytest.mark.parametrize("name,key,extra", [("mixtral-8x7b", "num_local_experts", "num_experts_per_tok"),
                                            ("qwen1.5-moe-a2.7b", "num_experts", "num_experts_per_tok"),
                                            ("deepseek-moe-16b", "n_routed_experts", "num_experts_per_tok"),
                                            ("dbrx-base", "ffn_config.moe_num_experts", "moe_top_k 4")])
def test_mixture_of_experts_refused_naming_the_expert_fields(tmp_path, tiny_doc, backend, capsys, name, key, extra):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(_scenario(tiny_doc, DATA / name / "config.json")))
    assert main(["simulate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{DATA / name / 'config.json'}: {key}: expected a dense decoder" in err and extra in err


@pytest.mark.parametrize("name,key,needle", [
    ("mllama-90b-4layer", "text_config.cross_attention_layers", "expected a decoder of self-attention layers"),
    ("rwkv5-3b", "model_type", "expected a transformer decoder")])
def test_decoders_that_are_not_self_attention_stacks_are_refused(tmp_path, tiny_doc, backend, capsys, name, key,
                                                                 needle):
    """Llama 3.2 Vision's cross-attention layers (image states outside the sequence) and recurrent models
    would price as if they were self-attention layers: refused in one line, naming the key."""
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(_scenario(tiny_doc, DATA / name / "config.json")))
    assert main(["simulate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{DATA / name / 'config.json'}: {key}: {needle}" in err, err


@pytest.mark.parametrize("edit,key,needle", [
    # Llama 3.2 Vision without the list: its model type says it (transformers would fill the list in)
    (lambda c: c["text_config"].pop("cross_attention_layers"), "text_config.model_type",
     "expected a decoder of self-attention layers"),
    (lambda c: c["text_config"].__setitem__("cross_attention_layers", 3), "text_config.cross_attention_layers",
     "expected a list of layer indices, got 3"),
    (lambda c: c.__setitem__("model_type", "llava") or c["text_config"].update(model_type="llama",
                                                                                layer_types=["full_attention", "conv"])
     or c["text_config"].pop("cross_attention_layers"), "text_config.layer_types",
     "expected self-attention layers (recurrent, convolution and linear-attention layers are not modelled), got "
     "'conv' layers"),
])
def test_variants_of_non_self_attention_decoders_are_refused_naming_the_key(tmp_path, tiny_doc, backend, capsys,
                                                                             edit, key, needle):
    cfg = json.loads((DATA / "mllama-90b-4layer" / "config.json").read_text())
    edit(cfg)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    _, err = _run(tmp_path, tiny_doc, path, capsys)
    assert f"{path}: {key}: {needle}" in err, err


@pytest.mark.parametrize("value,key", [("x", "thinker_config"), ({"text_config": [1]}, "thinker_config.text_config")])
def test_malformed_omni_container_names_its_path(tmp_path, tiny_doc, backend, capsys, value, key):
    cfg = json.loads((DATA / "qwen2.5-omni-7b-awq" / "config.json").read_text())
    cfg["thinker_config"] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    _, err = _run(tmp_path, tiny_doc, path, capsys)
    assert f"{path}: {key}: expected a mapping holding the language model's config" in err, err


def _set(path, value):
    """An edit of a config dict: set (or with value ``...``, delete) the key at a dotted path."""
    def edit(cfg):
        *outer, last = path.split(".")
        for k in outer:
            cfg = cfg[k]
        if value is ...:
            cfg.pop(last)
        else:
            cfg[last] = value
    return edit


@pytest.mark.parametrize("fixture,edits,key,needle", [
    # mixture-of-experts configs refused whatever the spelling, never priced as dense
    ("mixtral-8x7b", [_set("num_local_experts", "8")], "num_local_experts", "expected an integer, got '8'"),
    ("mixtral-8x7b", [_set("num_local_experts", ...)], "num_experts_per_tok", "expected a dense decoder"),
    ("mixtral-8x7b", [_set("num_local_experts", 0)], "num_experts_per_tok", "expected a dense decoder"),
    ("mixtral-8x7b", [_set("num_local_experts", ...), _set("num_experts_per_tok", ...)], "model_type",
     "expected a dense decoder (mixture-of-experts layers are not modelled), got model_type 'mixtral'"),
    ("dbrx-base", [_set("ffn_config", "moe")], "ffn_config", "expected a mapping, got 'moe'"),
    # switches, the tie and MPT's ratio are read strictly: a string "true" is not true
    ("falcon-7b", [_set("multi_query", "true")], "multi_query", "expected true or false, got 'true'"),
    ("chatglm3-6b", [_set("multi_query_attention", 1)], "multi_query_attention", "expected true or false, got 1"),
    ("gpt2", [_set("tie_word_embeddings", "yes")], "tie_word_embeddings", "expected true or false, got 'yes'"),
    ("mpt-7b", [_set("expansion_ratio", -8)], "expansion_ratio", "expected a positive number, got -8"),
    ("gpt2", [_set("model_type", "")], "model_type", "expected a model type name, got ''"),
    ("llava-1.5-7b", [_set("text_config", "llama")], "text_config",
     "expected a mapping holding the language model's config, got 'llama'"),
    ("gpt2", [_set("layer_types", "mamba")], "layer_types", "expected a list of layer kinds, got 'mamba'"),
    # shapes that cannot be built are blamed on the config file's key, not on the scenario
    ("gemma2-2b", [_set("num_key_value_heads", 3)], "num_key_value_heads",
     "expected a divisor of num_attention_heads (8), got 3"),
    ("gpt2", [_set("n_head", 7), _set("n_embd", 64)], "head_dim",
     "expected a value, since hidden_size (64) is not a multiple of num_attention_heads (7)"),
])
def test_malformed_configs_are_refused_naming_the_key(tmp_path, tiny_doc, backend, capsys, fixture, edits, key,
                                                      needle):
    _assert_refused(tmp_path, tiny_doc, capsys, fixture, edits, key, needle)


def _assert_refused(tmp_path, tiny_doc, capsys, fixture, edits, key, needle):
    """The fixture's config.json, edited, is refused in one line naming the file, the key and the reason."""
    cfg = json.loads((DATA / fixture / "config.json").read_text())
    for edit in edits:
        edit(cfg)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    _, err = _run(tmp_path, tiny_doc, path, capsys)
    assert f"{path}: {key}: {needle}" in err, err


def test_a_field_transformers_rejects_is_named_where_the_file_has_it(tmp_path, tiny_doc, capsys):
    """transformers' strict configuration classes reject a mistyped field; the error names that key of the file
    (where nothing nested could hold a field of the same name)."""
    pytest.importorskip("transformers")
    cfg = json.loads((DATA / "gpt2" / "config.json").read_text())
    cfg["layer_norm_epsilon"] = "x"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    _, err = _run(tmp_path, tiny_doc, path, capsys)
    assert f"{path}: layer_norm_epsilon: expected a config transformers can read" in err, err


def test_every_missing_key_is_named_at_once(tmp_path, tiny_doc, backend, capsys):
    """A model type nobody knows, with only a vocabulary: one error names every missing size, so filling them
    in takes one edit rather than one run each."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "nobody_knows_this", "vocab_size": 1000}))
    _, err = _run(tmp_path, tiny_doc, path, capsys)
    assert f"{path}: num_hidden_layers: expected a value (model type 'nobody_knows_this' has no default for it; " \
        "also missing: hidden_size, num_attention_heads, intermediate_size" in err, err


def test_gemma2_without_head_dim_takes_its_classes_default_in_both_backends(tmp_path, tiny_doc, backend):
    """Gemma 2's head_dim (256) is not hidden / heads: a file that omits it (and the K/V heads, and the
    activation) gets the class defaults, with or without transformers."""
    cfg = json.loads((DATA / "gemma2-2b" / "config.json").read_text())
    for k in ("head_dim", "num_key_value_heads", "hidden_activation", "hidden_act"):
        cfg.pop(k, None)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    got = scenario_from_dict(_scenario(tiny_doc, path)).model
    assert (got.head_dim, got.num_key_value_heads, got.mlp) == (256, 4, "geglu"), backend


def test_fallback_tie_defaults_agree_with_transformers():
    """Every model type the built-in fallback takes as tied by default ties in transformers' configuration
    class too, and every common decoder type transformers ties is in the fallback's list."""
    transformers = pytest.importorskip("transformers")
    from trsim.simulator.hf_config import TIED_BY_DEFAULT
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in TIED_BY_DEFAULT:
            if t not in transformers.CONFIG_MAPPING:
                continue  # a type newer or older than the installed transformers
            cfg = transformers.CONFIG_MAPPING[t]()
            cfg = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
            assert cfg.tie_word_embeddings is True, t
        for t in ("gemma", "gemma2", "gemma3_text", "gpt2", "opt", "bloom", "falcon", "starcoder2", "cohere"):
            assert t in TIED_BY_DEFAULT, t
        for t in ("llama", "mistral", "qwen2", "phi3", "gpt_neox", "mixtral"):
            assert t not in TIED_BY_DEFAULT and transformers.CONFIG_MAPPING[t]().tie_word_embeddings is False, t
        # the built-in defaults are the configuration classes' own
        from trsim.simulator.hf_config import FALLBACK_DEFAULTS
        for t, defaults in FALLBACK_DEFAULTS.items():
            cfg = transformers.CONFIG_MAPPING[t]()
            for k, v in defaults.items():
                assert getattr(cfg, k) == v, (t, k, getattr(cfg, k), v)


def _run(tmp_path, tiny_doc, cfg_path, capsys, **model):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(_scenario(tiny_doc, cfg_path, **model)))
    code = main(["simulate", str(p)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return str(p), err


def _refused(tmp_path, tiny_doc, capsys, cfg: dict):
    """``cfg`` written as a config.json and simulated: refused in one line (``_run``); (the file, the line)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path, _run(tmp_path, tiny_doc, path, capsys)[1]


def test_missing_key_names_the_config_file_and_key(tmp_path, tiny_doc, capsys, backend):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "my_custom_lm", "hidden_size": 64, "num_attention_heads": 4,
                               "intermediate_size": 128, "vocab_size": 100}))
    _, err = _run(tmp_path, tiny_doc, cfg, capsys)
    assert f"{cfg}: num_hidden_layers: expected a value" in err and "model.num_layers" in err
    # the scenario may supply it
    tiny_doc2 = _scenario(dict(tiny_doc), cfg, num_layers=4)
    assert scenario_from_dict(tiny_doc2).model.num_layers == 4


def test_nested_missing_key_is_named_with_its_path(tmp_path, tiny_doc, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "some_vlm", "language_config": {
        "model_type": "my_lm", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 8,
        "vocab_size": 10}}))
    _, err = _run(tmp_path, tiny_doc, cfg, capsys)
    assert f"{cfg}: language_config.num_hidden_layers: expected a value" in err


@pytest.mark.parametrize("value,needle", [("4096", "got '4096'"), (True, "got true"), (-3, ">= 1"),
                                          (2**70, "<="), (12.5, "whole number")])
def test_wrong_types_in_config_name_the_key(tmp_path, tiny_doc, capsys, backend, value, needle):
    cfg = tmp_path / "config.json"
    doc = json.loads((DATA / "llava-1.5-7b" / "config.json").read_text())
    doc["text_config"]["hidden_size"] = value
    cfg.write_text(json.dumps(doc))
    _, err = _run(tmp_path, tiny_doc, cfg, capsys)
    assert f"{cfg}: text_config.hidden_size: expected" in err and needle in err, err


def test_unreadable_config_paths(tmp_path, tiny_doc, capsys):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "latin1.json").write_bytes(b'{"model_type": "caf\xe9"}')
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "dup.json").write_text('{"hidden_size": 1, "hidden_size": 2}')
    cases = [("empty_dir", "model.hf_config", "without config.json"),
             ("missing.json", "model.hf_config", "not found"),
             ("loop.json", "model.hf_config", "symlink loop"),
             ("latin1.json", "<file>", "UTF-8"),
             ("list.json", "<root>", "a mapping"),
             ("dup.json", "hidden_size", "each key once")]
    for name, field, needle in cases:
        path, err = _run(tmp_path, tiny_doc, tmp_path / name, capsys)
        blamed = path if field.startswith("model.") else str(tmp_path / name)
        assert f"{blamed}: {field}: expected" in err and needle in err, (name, err)
    if os.geteuid() != 0:  # root reads anything
        (tmp_path / "secret.json").write_text("{}")
        (tmp_path / "secret.json").chmod(0)
        _, err = _run(tmp_path, tiny_doc, tmp_path / "secret.json", capsys)
        assert "permission denied" in err


@pytest.mark.parametrize("name,edits,key,needle", [
    # MiniCPM-V 4.6's Qwen3.5 decoder: three linear-attention layers for each softmax one
    ("minicpm-v-4.6", [], "text_config.layer_types", "expected self-attention layers (recurrent, convolution and "
     "linear-attention layers are not modelled), got 'linear_attention' layers"),
    # DeepSeek-V2-Lite: mixture of experts, and multi-head latent attention (named once the experts are gone)
    ("deepseek-v2-lite", [], "n_routed_experts", "expected a dense decoder"),
    ("deepseek-v2-lite", [_set(k, ...) for k in ("n_routed_experts", "num_experts_per_tok", "n_shared_experts",
                                                  "moe_intermediate_size")] + [_set("model_type", "my_mla")],
     "kv_lora_rank", "expected a decoder of multi-head attention (multi-head latent attention, MLA, is not "
     "modelled), got kv_lora_rank 512"),
])
def test_new_published_configs_refused_naming_what_is_not_modelled(tmp_path, tiny_doc, backend, capsys, name, edits,
                                                                   key, needle):
    _assert_refused(tmp_path, tiny_doc, capsys, name, edits, key, needle)


# Configs modelled on published ones (their keys and sizes; long lists shortened), each exposing a way the reader
# used to go wrong: priced silently with the wrong shape, or refused with a misleading message.
OLMO_1B = {  # allenai/OLMo-1B, OLMo's own (hf_olmo) layout under model_type olmo, which transformers also knows
    "activation_type": "swiglu", "alibi": False, "architectures": ["OLMoForCausalLM"], "block_type": "sequential",
    "d_model": 2048, "embedding_size": 50304, "eos_token_id": 50279, "include_bias": False,
    "max_sequence_length": 2048, "mlp_hidden_size": None, "mlp_ratio": 8, "model_type": "olmo",
    "multi_query_attention": False, "n_heads": 16, "n_layers": 16, "pad_token_id": 1, "rope": True,
    "vocab_size": 50280, "weight_tying": True}
MINICPM3_4B = {  # openbmb/MiniCPM3-4B: multi-head latent attention in a dense decoder
    "architectures": ["MiniCPM3ForCausalLM"], "hidden_act": "silu", "hidden_size": 2560, "num_hidden_layers": 62,
    "intermediate_size": 6400, "num_attention_heads": 40, "num_key_value_heads": 40, "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32, "q_lora_rank": 768, "kv_lora_rank": 256, "vocab_size": 73448, "scale_emb": 12,
    "dim_model_base": 256, "scale_depth": 1.4, "model_type": "minicpm3"}
BLIP2_FLAN_T5 = {  # Salesforce/blip2-flan-t5-xl: T5 (encoder-decoder) as the language model
    "model_type": "blip-2", "num_query_tokens": 32, "architectures": ["Blip2ForConditionalGeneration"],
    "text_config": {"architectures": ["T5ForConditionalGeneration"], "d_ff": 5120, "d_kv": 64, "d_model": 2048,
                    "feed_forward_proj": "gated-gelu", "model_type": "t5", "num_decoder_layers": 24,
                    "num_heads": 32, "num_layers": 24, "tie_word_embeddings": False, "vocab_size": 32128}}
MAMBA_SSM = {"d_model": 2560, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
             "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}  # state-spaces/mamba-2.8b
DECILM_7B = {  # Deci/DeciLM-7B: grouped-query attention with 2 or 4 K/V heads, layer by layer
    "architectures": ["DeciLMForCausalLM"], "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
    "model_type": "deci", "num_attention_heads": 32, "num_hidden_layers": 4,
    "num_key_value_heads_per_layer": [4, 4, 2, 2], "tie_word_embeddings": False, "vocab_size": 32000}
NEMOTRON_51B = {  # nvidia/Llama-3_1-Nemotron-51B-Instruct: layers pruned each its own way (two of them here)
    "architectures": ["DeciLMForCausalLM"], "block_configs": [
        {"attention": {"n_heads_in_group": 8, "no_op": False}, "ffn": {"ffn_mult": 2.625, "no_op": False}},
        {"attention": {"n_heads_in_group": None, "no_op": True}, "ffn": {"ffn_mult": 1.3125, "no_op": False}}],
    "hidden_act": "silu", "hidden_size": 8192, "model_type": "nemotron-nas", "num_attention_heads": 64,
    "num_hidden_layers": 2, "tie_word_embeddings": False, "vocab_size": 128256}
GEMMA3N = {"architectures": ["Gemma3nForConditionalGeneration"], "model_type": "gemma3n", "text_config": {
    "model_type": "gemma3n_text", "hidden_size": 2048, "num_hidden_layers": 2, "intermediate_size": [8192, 8192],
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256, "vocab_size": 262400,
    "hidden_size_per_layer_input": 256, "vocab_size_per_layer_input": 262144, "altup_num_inputs": 4,
    "laurel_rank": 64, "num_kv_shared_layers": 10}}  # google/gemma-3n-E2B
COGVLM = {"architectures": ["CogVLMForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
          "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000,
          "template_version": "chat", "vision_config": {"hidden_size": 1792, "num_hidden_layers": 63}}  # THUDM/cogvlm
KOSMOS_2 = {"architectures": ["Kosmos2ForConditionalGeneration"], "model_type": "kosmos-2", "text_config": {
    "activation_function": "gelu", "attention_heads": 32, "embed_dim": 2048, "ffn_dim": 8192, "layers": 24,
    "model_type": "kosmos_2_text_model", "vocab_size": 65037}}  # microsoft/kosmos-2-patch14-224
PHI3_SMALL = {  # microsoft/Phi-3-small-8k-instruct (remote code; its class ties the LM head to the embedding)
    "architectures": ["Phi3SmallForCausalLM"], "dense_attention_every_n_layers": 2, "ff_intermediate_size": 14336,
    "gegelu_limit": 20.0, "hidden_act": "gegelu", "hidden_size": 4096, "model_type": "phi3small",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 100352}


@pytest.mark.parametrize("cfg,expected", [
    # OLMo-1B (1.18e9 parameters): transformers' OlmoConfig ignores d_model/n_heads/mlp_ratio and used to answer
    # with its defaults (a K/V head count of 32 for 16 heads: refused, or LLaMA-7B's MLP width); mlp_ratio x d_model
    # is the fused gate-and-up projection (halved by SwiGLU) and weight_tying ties the LM head
    (OLMO_1B, dict(num_layers=16, hidden_size=2048, num_attention_heads=16, num_key_value_heads=16, head_dim=128,
                   intermediate_size=8192, vocab_size=50280, tie_word_embeddings=True, mlp="swiglu")),
    (dict(OLMO_1B, mlp_hidden_size=22016, mlp_ratio=None, d_model=4096, n_heads=32, n_layers=32,
          weight_tying=False), dict(num_layers=32, hidden_size=4096, num_attention_heads=32, intermediate_size=11008,
                                    tie_word_embeddings=False, mlp="swiglu")),   # OLMo-7B (6.9e9)
    # Kosmos-2's text model spells its sizes embed_dim / layers (the fallback used to miss them)
    (KOSMOS_2, dict(num_layers=24, hidden_size=2048, num_attention_heads=32, num_key_value_heads=32,
                    intermediate_size=8192, vocab_size=65037, tie_word_embeddings=True, mlp="gelu")),
    # Phi-3-small (7.39e9): ff_intermediate_size, a gated GeGLU ("gegelu"), tied (used to be refused as missing
    # intermediate_size)
    (PHI3_SMALL, dict(num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                      intermediate_size=14336, vocab_size=100352, tie_word_embeddings=True, mlp="geglu")),
    # a per-layer list whose layers all agree is that one value
    (dict(DECILM_7B, num_key_value_heads_per_layer=[8, 8, 8, 8]), dict(num_key_value_heads=8)),
])
def test_other_spellings_of_published_configs(tmp_path, tiny_doc, backend, cfg, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    got = scenario_from_dict(_scenario(tiny_doc, path)).model.model_dump()
    for k, v in expected.items():
        assert got[k] == v, (backend, k, got[k], v)


@pytest.mark.parametrize("cfg,key,needle", [
    (MINICPM3_4B, "kv_lora_rank", "expected a decoder of multi-head attention (multi-head latent attention, MLA, is "
     "not modelled), got kv_lora_rank 256"),
    (BLIP2_FLAN_T5, "text_config.model_type", "expected a decoder-only language model (encoder-decoder models are not "
     "modelled), got model_type 't5'"),
    (dict(BLIP2_FLAN_T5["text_config"], model_type="my_seq2seq", is_encoder_decoder=True), "is_encoder_decoder",
     "expected a decoder-only language model (encoder-decoder models are not modelled), got is_encoder_decoder true"),
    (MAMBA_SSM, "ssm_cfg", "expected a transformer decoder (recurrent and state-space layers are not modelled), got "
     "the state-space setting ssm_cfg"),
    (DECILM_7B, "num_key_value_heads_per_layer", "expected the same value for every layer (layers of different shapes "
     "are not modelled), got 2 different values: 2, 4"),
    (NEMOTRON_51B, "model_type", "expected a decoder of alike layers"),
    (dict(NEMOTRON_51B, model_type="my_nas"), "block_configs", "expected a decoder of alike layers (per-layer "
     "embeddings, layers without attention or MLP, shared K/V caches and modality-expert weights are not modelled), "
     "got a list of 2 per-layer blocks"),
    (GEMMA3N, "text_config.model_type", "expected a decoder of alike layers"),
    (COGVLM, "architectures", "expected a decoder of alike layers"),
])
def test_shapes_a_dense_decoder_cannot_describe_are_refused(tmp_path, tiny_doc, backend, capsys, cfg, key, needle):
    """Each used to be priced silently with the wrong shape (MiniCPM3's latent attention as 40 heads of 32 or 64,
    DeciLM's 2-4 K/V heads as 32, CogVLM's visual expert not at all) or refused by a missing size that was not the
    point (T5's, Mamba's, Nemotron-NAS's)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    _, err = _run(tmp_path, tiny_doc, path, capsys)
    assert f"{path}: {key}: {needle}" in err, err


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_published_configs_price_the_published_parameter_count(tiny_doc, backend, name):
    """The decoder read from each VLM's config has its language model's published size (within 1.5%): a two-matrix
    MLP priced as gated, a missed tie or a wrong head_dim would be off by far more."""
    from trsim.simulator.costs import base_parameters
    scn = scenario_from_dict(_scenario(tiny_doc, DATA / name / "config.json"))
    got = base_parameters(scn.model)
    assert got == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.015), (name, backend, got)


ADAPTER = "expected a decoder whose weights are the same for every token (modality-specific adapter weights"


@pytest.mark.parametrize("name,edits,key,needle", [
    # mixture-of-experts decoders inside VLMs, each in its own nesting and spelling
    ("qwen3-vl-30b-a3b", [], "text_config.num_experts", "expected a dense decoder (mixture-of-experts layers are not "
     "modelled), got a mixture-of-experts config with num_experts 128, num_experts_per_tok 8"),
    ("deepseek-ocr", [], "language_config.n_routed_experts", "expected a dense decoder"),
    ("llama-4-scout", [], "text_config.num_local_experts", "expected a dense decoder"),
    ("aria", [], "text_config.moe_num_experts", "expected a dense decoder"),
    ("kimi-vl-a3b", [], "text_config.n_routed_experts", "expected a dense decoder"),
    # ... and Kimi-VL's latent attention, named once its experts are gone
    ("kimi-vl-a3b", [_set(f"text_config.{k}", ...) for k in ("n_routed_experts", "num_experts_per_tok",
                                                             "n_shared_experts", "moe_intermediate_size")]
     + [_set("text_config.model_type", "my_mla")], "text_config.kv_lora_rank",
     "expected a decoder of multi-head attention (multi-head latent attention, MLA, is not modelled), got "
     "kv_lora_rank 512"),
    # modality-specific LoRA weights in every layer (used to be priced as the dense base decoder): by the model type,
    # by the architecture where the type is renamed, by Phi-4-multimodal's adapter settings where the file has them
    ("internlm-xcomposer2-1layer", [], "model_type", ADAPTER),
    ("internlm-xcomposer2-1layer", [_set("model_type", "my_xc"),
                                    _set("architectures", ["InternLMXComposer2ForCausalLM"])],
     "architectures", ADAPTER),
    ("phi-4-multimodal-2layer", [], "model_type", ADAPTER),
    ("phi-4-multimodal-2layer", [_set("model_type", "my_phi"), _set("architectures", ["MyForCausalLM"]),
                                 _set("vision_lora", {"dp": 0.0, "lora_alpha": 512, "r": 256})], "vision_lora",
     f"{ADAPTER}, such as InternLM-XComposer2's Partial LoRA or Phi-4-multimodal's vision and speech LoRA, are not "
     "modelled; give the model fields explicitly to price the base decoder alone), got a rank-256 adapter in "
     "vision_lora"),
    ("phi-4-multimodal-2layer", [_set("model_type", "my_phi"), _set("speech_lora", "yes")], "speech_lora",
     "expected a mapping (the adapter's settings) or null, got 'yes'"),
    # Show-o keeps only its own settings and names its decoder (microsoft/phi-1_5) by Hub path: nothing to price
    ("show-o", [], "num_hidden_layers", "expected a value (model type unknown has no default for it; also missing: "
     "hidden_size, num_attention_heads, intermediate_size"),
    # a llava_llama config with neither the decoder's own keys nor VILA's llm/ sub-folder
    ("llava-llama-vicuna-7b", [_set("hidden_size", ...), _set("num_hidden_layers", ...)], "llm_cfg",
     "expected the language model's config, inline or in"),
])
def test_vlm_configs_refused_naming_what_is_not_modelled(tmp_path, tiny_doc, backend, capsys, name, edits, key,
                                                        needle):
    _assert_refused(tmp_path, tiny_doc, capsys, name, edits, key, needle)


@pytest.mark.parametrize("model_type,mlp", [
    ("bunny-phi", "gelu"),        # Phi-2 inside: two matrices
    ("my_tool-phi", "gelu"),      # the longest known suffix names the decoder
    ("bunny-phi3", "geglu"),      # Phi-3 inside: gated (gelu_new as its activation, so GeGLU)
    ("bunny-llama", "geglu"),
    ("bunny-", "geglu"),          # no decoder named: an unknown type is taken as gated
    ("llava_mpt", "gelu"),
])
def test_remote_code_types_named_after_their_decoder_take_its_mlp(tmp_path, tiny_doc, backend, model_type, mlp):
    """Bunny, LLaVA and others name their remote-code type <project>-<decoder> and subclass that decoder's
    configuration class; an unknown type named so takes that decoder's MLP kind."""
    cfg = json.loads((DATA / "bunny-v1.0-3b" / "config.json").read_text())
    cfg["model_type"] = model_type
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    got = scenario_from_dict(_scenario(tiny_doc, path)).model
    assert got.mlp == mlp, (model_type, backend)


def test_a_decoder_named_in_the_type_also_gives_the_tie_default(tmp_path, tiny_doc, backend):
    """llava_mpt without tie_word_embeddings: MPT ties its LM head, so does the type named after it."""
    cfg = json.loads((DATA / "bunny-v1.0-3b" / "config.json").read_text())
    cfg.pop("tie_word_embeddings")
    path = tmp_path / "config.json"
    for model_type, tied in (("llava_mpt", True), ("bunny-phi", False)):
        path.write_text(json.dumps(dict(cfg, model_type=model_type)))
        assert scenario_from_dict(_scenario(tiny_doc, path)).model.tie_word_embeddings is tied, (model_type, backend)


@pytest.mark.parametrize("name,window,layers", [
    ("gemma2-2b", 4096, 13),           # every other layer from the first (transformers' layer_types, or the type's rule)
    ("paligemma2-3b", 4096, 13),       # the same Gemma 2 under PaliGemma's text_config
    ("gemma3-27b", 1024, 52),          # five of every six of 62 layers
    ("idefics2-8b", 4096, 32),         # Mistral 7B v0.1: every layer
    ("phi-3-vision-128k", 131072, 32),
    ("llava-v1.6-mistral-7b", None, None),          # Mistral 7B v0.2: sliding_window null
    ("qwen2.5-vl-3b", None, None),                  # a window published but use_sliding_window false
    ("llava-next-interleave-qwen-0.5b", None, None),
    ("qwen2-vl-7b", None, None),
])
def test_sliding_window_layers_are_read_from_published_configs(tiny_doc, backend, name, window, layers):
    scn = scenario_from_dict(_scenario(tiny_doc, DATA / name / "config.json"))
    assert (scn.model.sliding_window, scn.model.sliding_window_layers) == (window, layers), backend
    assert scn.model.windowed_layers == (layers or 0)


@pytest.mark.parametrize("cfg,window,layers", [
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=4096, max_window_layers=20), 4096, 4),
    (dict(model_type="gemma3_text", sliding_window=512, sliding_window_pattern=4), 512, 18),
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=4096), None, None),  # from layer 28 on: none of 24
    (dict(model_type="cohere2", sliding_window=4096), 4096, 18),                           # three of every four
    # transformers' Mistral windows every layer, whatever layer_types or use_sliding_window say; Ministral reads
    # layer_types
    (dict(model_type="mistral", sliding_window=4096, layer_types=["sliding_attention", "full_attention"] * 12),
     4096, 24),
    (dict(model_type="mistral", sliding_window=4096, use_sliding_window=False), 4096, 24),
    (dict(model_type="ministral", sliding_window=4096, layer_types=["sliding_attention", "full_attention"] * 12),
     4096, 12),
    (dict(model_type="llama", sliding_window=4096), None, None),      # LLaMA keeps the key and ignores it
    (dict(model_type="mistral", sliding_window=0), None, None),       # 0, as Qwen2-MoE writes it: no window
])
def test_sliding_window_rules_of_each_model_type(tmp_path, tiny_doc, backend, cfg, window, layers):
    doc = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8, head_dim=64,
               intermediate_size=4096, vocab_size=32000, **cfg)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    m = scenario_from_dict(_scenario(tiny_doc, path)).model
    assert (m.sliding_window, m.sliding_window_layers) == (window, layers), backend


@pytest.mark.parametrize("name,layers,windowed", [("gemma3-27b", 4, 4), ("gemma3-27b", 12, 10), ("gemma2-2b", 4, 2),
                                                   ("gemma2-2b", 30, 15), ("idefics2-8b", 8, 8)])
def test_windowed_layers_of_a_model_the_scenario_resizes(tiny_doc, backend, name, layers, windowed):
    """A scenario that changes the depth gets the model type's count for that depth, not the file's."""
    m = scenario_from_dict(_scenario(tiny_doc, DATA / name / "config.json", num_layers=layers)).model
    assert (m.num_layers, m.sliding_window_layers) == (layers, windowed), backend


@pytest.mark.parametrize("model,field,needle", [
    (dict(sliding_window_layers=30), "model.sliding_window_layers", "at most num_layers (26), got 30"),
    (dict(sliding_window=0), "model.sliding_window", ">= 1"),
])
def test_bad_window_settings_in_a_scenario_are_refused_in_one_line(tmp_path, tiny_doc, capsys, model, field, needle):
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump(_scenario(tiny_doc, DATA / "gemma2-2b" / "config.json", **model)))
    assert main(["simulate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"trsim: error: {bad}: {field}: expected ") and needle in err and "\n" not in err, err


def test_window_layers_without_a_window_are_refused(tmp_path, tiny_doc, capsys):
    bad = tmp_path / "s.yaml"
    tiny_doc["model"]["sliding_window_layers"] = 2
    bad.write_text(yaml.safe_dump(tiny_doc))
    assert main(["simulate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"trsim: error: {bad}: model.sliding_window: expected a window in tokens") and "\n" not in err


@pytest.mark.parametrize("value,shown", [("4096", "'4096'"), (True, "true"), (4096.0, "4096.0"), (-1, "-1")])
def test_a_bad_window_in_a_config_names_the_key(tmp_path, tiny_doc, backend, capsys, value, shown):
    cfg = json.loads((DATA / "idefics2-8b" / "config.json").read_text())
    cfg["text_config"]["sliding_window"] = value
    path, err = _refused(tmp_path, tiny_doc, capsys, cfg)
    assert err.startswith(f"trsim: error: {path}: text_config.sliding_window: expected a number of tokens") \
        and f"got {shown}" in err and "\n" not in err, err


def test_a_sequence_longer_than_the_window_is_flagged_as_an_upper_bound(tmp_path, tiny_doc, capsys):
    """The window is not priced (attention over the whole causal prefix): a result whose task is longer than
    the window says so, in the table and in JSON; one within the window says nothing."""
    from trsim.simulator import simulate
    seq = sum(seg["tokens"] for seg in next(iter(tiny_doc["tasks"].values()))["segments"])
    for window, flagged in ((seq - 1, True), (seq, False)):
        doc = dict(tiny_doc, model=dict(tiny_doc["model"], sliding_window=window, sliding_window_layers=1))
        res = simulate(scenario_from_dict(doc))
        notes = [w for r in res.schedules for w in r.warnings if "sliding window" in w]
        assert bool(notes) == flagged, (window, notes)
        if flagged:
            assert f"1 of {doc['model']['num_layers']} layers attend within a sliding window of {window:,} tokens" \
                in notes[0] and "upper bound" in notes[0]


# Found by fuzzing the window keys (tests/fuzzing.py _set_hf_window). Each key that decides a file's window is checked
# by trsim before any library: transformers refused some of these naming no key (``<file>``, ``text_config``:
# use_sliding_window "true", max_window_layers 4.0, a layer_types of the wrong length), crashed on others (a null
# max_window_layers with use_sliding_window true, a null Gemma 3 pattern), and without transformers a bad value was
# read silently as the type's default (max_window_layers -1 or 10**400, sliding_window_pattern 0, "6" or 1.5,
# layer_types with unknown kinds or the wrong length).
_WINDOW_BASE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8, head_dim=64,
                    intermediate_size=4096, vocab_size=32000, sliding_window=4096)


@pytest.mark.parametrize("cfg,key,needle", [
    (dict(model_type="qwen2", use_sliding_window="true"), "use_sliding_window", "true or false, got 'true'"),
    (dict(model_type="qwen2", use_sliding_window=1), "use_sliding_window", "true or false, got 1"),
    (dict(model_type="mistral", use_sliding_window="no"), "use_sliding_window", "got 'no'"),
    (dict(model_type="qwen2", use_sliding_window=True, max_window_layers=-1), "max_window_layers", "got -1"),
    (dict(model_type="qwen2", use_sliding_window=True, max_window_layers=4.0), "max_window_layers", "got 4.0"),
    (dict(model_type="qwen2", use_sliding_window=True, max_window_layers=True), "max_window_layers", "got true"),
    (dict(model_type="qwen2", use_sliding_window=True, max_window_layers="28"), "max_window_layers", "got '28'"),
    (dict(model_type="qwen2", use_sliding_window=True, max_window_layers=10**400), "max_window_layers",
     "from 0 to 4096"),
    (dict(model_type="qwen2", use_sliding_window=True, max_window_layers=None), "max_window_layers", "got null"),
    (dict(model_type="gemma3_text", sliding_window_pattern=0), "sliding_window_pattern", "from 1 to 4096, got 0"),
    (dict(model_type="gemma3_text", sliding_window_pattern=1.5), "sliding_window_pattern", "got 1.5"),
    (dict(model_type="gemma3_text", sliding_window_pattern="6"), "sliding_window_pattern", "got '6'"),
    (dict(model_type="gemma3_text", sliding_window_pattern=2**63), "sliding_window_pattern", "from 1 to 4096"),
    (dict(model_type="gemma3_text", sliding_window_pattern=None), "sliding_window_pattern", "got null"),
    (dict(model_type="cohere2", sliding_window_pattern=None), "sliding_window_pattern", "got null"),
    (dict(model_type="gemma2", layer_types=["sliding_attention", 1] * 12), "layer_types", "got 1 for layer 1"),
    (dict(model_type="llama", layer_types=["Sliding_Attention"] * 24), "layer_types", "got 'Sliding_Attention'"),
    (dict(model_type="llama", layer_types=[["sliding_attention"]] * 24), "layer_types", "got a list of 1 item"),
    (dict(model_type="gemma2", layer_types=["sliding_attention"] * 3), "layer_types", "each of the 24 layers, got 3"),
    (dict(model_type="llama", layer_types=["sliding_attention"] * 10**5), "layer_types", "got 100000 kinds"),
    (dict(model_type="gemma2", layer_types=[]), "layer_types", "each of the 24 layers, got 0 kinds"),
])
def test_bad_window_keys_in_a_config_are_named_in_both_backends(tmp_path, tiny_doc, backend, capsys, cfg, key, needle):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**_WINDOW_BASE, **cfg}))
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump(_scenario(tiny_doc, path)))
    assert main(["simulate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"trsim: error: {path}: {key}: expected ") and needle in err and "\n" not in err, \
        (backend, err)


@pytest.mark.parametrize("where,key,value,field", [
    ("outer", "layer_types", True, "layer_types"),                # PaliGemma's own level: transformers reads it too
    ("outer", "use_sliding_window", "yes", "use_sliding_window"),
    ("outer", "layer_types", [], None),                            # a list transformers refuses: named by trsim
    ("text_config", "layer_types", ["sliding_attention"] * 5, "text_config.layer_types"),
])
def test_window_keys_of_a_vlm_are_named_at_their_level(tmp_path, tiny_doc, backend, capsys, where, key, value, field):
    cfg = json.loads((DATA / "paligemma2-3b" / "config.json").read_text())
    (cfg if where == "outer" else cfg["text_config"])[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump(_scenario(tiny_doc, path)))
    code = main(["simulate", str(bad)])
    err = capsys.readouterr().err.strip()
    if field is None:  # the outer level's layer count may be the vision tower's: only transformers checks it
        assert code == 0 or err.startswith(f"trsim: error: {path}: layer_types: expected "), (backend, err)
        return
    assert code == 2 and err.startswith(f"trsim: error: {path}: {field}: expected ") and "\n" not in err, (backend, err)


def test_layer_types_are_counted_against_a_default_depth(tmp_path, tiny_doc, backend, capsys):
    """LLaVA's text_config leaves num_hidden_layers to LLaMA's default (32): five kinds are 27 layers short (refused
    by transformers' validator, which names no key, or by trsim once the default depth is known)."""
    cfg = json.loads((DATA / "llava-1.5-7b" / "config.json").read_text())
    cfg["text_config"].update(sliding_window=4096, layer_types=["sliding_attention"] * 5)
    path, err = _refused(tmp_path, tiny_doc, capsys, cfg)
    assert err.startswith(f"trsim: error: {path}: text_config.layer_types: expected ") and "\n" not in err, \
        (backend, err)
    if backend == "transformers":
        assert "(32)" in err and "(5)" in err, err
    else:
        assert "one kind for each of the 32 layers, got 5 kinds" in err, err


# Found by reading the fuzzer's window configs with and without transformers: the two backends disagreed.
@pytest.mark.parametrize("cfg,window,layers", [
    # transformers' Gemma 2 alternates whatever sliding_window_pattern says (the fallback read the pattern: 16)
    (dict(model_type="gemma2", sliding_window=4096, sliding_window_pattern=3), 4096, 12),
    # Qwen 2/3 drop the window without use_sliding_window, even for layers layer_types calls sliding (both
    # backends reported 24)
    (dict(model_type="qwen2", sliding_window=4096, layer_types=["sliding_attention"] * 24), None, None),
    (dict(model_type="qwen3", sliding_window=4096, use_sliding_window=False,
          layer_types=["sliding_attention"] * 24), None, None),
    (dict(model_type="qwen2", sliding_window=4096, use_sliding_window=True,
          layer_types=["sliding_attention"] * 24), 4096, 24),
    # a file that leaves sliding_window out has its class's default window (the fallback read none)
    (dict(model_type="mistral"), 4096, 24),
    (dict(model_type="gemma2"), 4096, 12),
    (dict(model_type="qwen2", use_sliding_window=True, max_window_layers=20), 4096, 4),
    (dict(model_type="mistral", sliding_window=None), None, None),               # an explicit null: no window
    (dict(model_type="llama"), None, None),
])
def test_window_rules_agree_with_and_without_transformers(tmp_path, tiny_doc, backend, cfg, window, layers):
    doc = {k: v for k, v in _WINDOW_BASE.items() if k != "sliding_window"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**doc, **cfg}))
    m = scenario_from_dict(_scenario(tiny_doc, path)).model
    assert (m.sliding_window, m.sliding_window_layers) == (window, layers), backend


def test_a_top_level_qwen2_vl_reads_its_text_config_defaults(tmp_path, tiny_doc, backend):
    """Qwen2-VL's language model is the file's top level: transformers' Qwen2VLConfig keeps the window in its text
    config, which was not consulted (the file's dict was copied before it was compared with the top level), so a
    file that turns the window on without giving its width was read as windowless with transformers only."""
    cfg = json.loads((DATA / "qwen2-vl-7b" / "config.json").read_text())
    cfg.update(use_sliding_window=True, max_window_layers=4)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    m = scenario_from_dict(_scenario(tiny_doc, path)).model
    assert (m.sliding_window, m.sliding_window_layers) == (4096, 24), backend


@pytest.mark.parametrize("model_type", ["qwen3", "qwen2", "qwen2_vl"])
def test_a_null_max_window_layers_is_named_for_the_types_that_read_it(tmp_path, tiny_doc, backend, capsys, model_type):
    """Fuzzed (seed 13): LLaVA with a Qwen 3 text_config and max_window_layers null, use_sliding_window unset, was
    refused by transformers blamed on text_config (Qwen 3's max_window_layers is an int, never null)."""
    cfg = json.loads((DATA / "llava-1.5-7b" / "config.json").read_text())
    cfg["text_config"].update(model_type=model_type, max_window_layers=None, sliding_window=1)
    path, err = _refused(tmp_path, tiny_doc, capsys, cfg)
    assert err.startswith(f"trsim: error: {path}: text_config.max_window_layers: expected ") and "got null" in err \
        and "\n" not in err, (backend, err)


def test_a_null_max_window_layers_at_a_vlm_level_of_a_type_that_reads_it(tmp_path, tiny_doc, backend, capsys):
    """Fuzzed: a file whose outer level says Qwen 3 (transformers builds it from that level) with max_window_layers
    null there was refused by transformers, blamed on text_config."""
    cfg = json.loads((DATA / "pixtral-12b" / "config.json").read_text())
    cfg.update(model_type="qwen3", max_window_layers=None)
    path, err = _refused(tmp_path, tiny_doc, capsys, cfg)
    assert err.startswith(f"trsim: error: {path}: max_window_layers: expected ") and "got null" in err \
        and "\n" not in err, (backend, err)
