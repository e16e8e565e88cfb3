"""``model: {hf_config: PATH}``: the decoder's shape from a published Hugging Face ``config.json``.

Unified and understanding VLMs nest their language model's config: LLaVA under ``text_config`` (which
omits every value equal to the LLaMA default), Janus-Pro under ``language_config``, VILA under
``llm_cfg`` or in an ``llm/`` sub-folder; Qwen2-VL, Emu3, Chameleon, Gemma and GPT-2 keep it at the top
level. Defaults come from the ``transformers`` configuration classes when they are installed (the
``hf`` extra; ``CONFIG_MAPPING[model_type](**config)``, offline, nothing is downloaded): they know every
model type's defaults. Without transformers a small built-in table covers the defaults that published
VLM configs rely on (LLaMA, Mistral, Qwen 2, Gemma 1-3, GPT-2); anything else must be spelled out, and the error names the
missing key and the file. Mixture-of-experts configs are refused: experts are not modelled, and pricing
one as dense would be silently wrong. So are the other shapes a stack of alike dense self-attention layers cannot
describe: multi-head latent attention, encoder-decoders, state-space and linear-attention layers, cross-attention
layers, layers that differ from one another (per-layer lists that disagree, NAS block configs, Gemma 3n),
modality-expert weights (CogVLM) and modality-specific LoRA adapters in every layer (InternLM-XComposer2,
Phi-4-multimodal). A remote-code layout published under a model type transformers also knows (OLMo's hf_olmo) is
read from the file's own keys, not from that class's defaults; a remote-code type nobody knows that is named after
the decoder it wraps (bunny-phi, llava_mpt) takes that decoder's MLP kind and tie default.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Strict, TypeAdapter, ValidationError

from .errors import ScenarioError, describe
from .reader import UnreadableFile, read_document

# Where a VLM's config.json keeps its language model's config.
NESTED = ("text_config", "language_config", "llm_cfg", "llm_config", "text_model_config")
# Model types whose nested language config defaults to LLaMA when it names no model_type (as transformers'
# LlavaConfig does).
LLAMA_BY_DEFAULT = ("llava", "llava_llama", "llava_next", "vipllava", "multi_modality", "janus")
# ModelSpec field -> config keys, first present wins (GPT-2 and others spell them differently).
# (Kosmos-2's text model: embed_dim, layers; Phi-3-small: ff_intermediate_size; DeciLM: one K/V head count a
# layer, num_key_value_heads_per_layer; a list of per-layer values is read only where every layer agrees)
KEYS = {"num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "layers"),
        "hidden_size": ("hidden_size", "n_embd", "n_embed", "d_model", "dim", "embed_dim"),
        "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads", "attention_heads"),
        "num_key_value_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "n_kv_heads",
                                "num_key_value_heads_per_layer"),
        "head_dim": ("head_dim", "kv_channels"),
        "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "ff_intermediate_size"),
        "vocab_size": ("vocab_size", "padded_vocab_size")}
# Model types published under an older name, read as the type transformers knows (Falcon's first
# remote-code releases: tiiuae/falcon-7b and -40b's RWConfig, a two-matrix GELU MLP and a tied LM head).
TYPE_ALIASES = {"RefinedWeb": "falcon", "RefinedWebModel": "falcon"}
# ... and their keys, renamed to what that type's configuration class reads (RWConfig's n_head, n_layer)
ALIAS_KEYS = {"n_head": "num_attention_heads", "n_layer": "num_hidden_layers", "n_head_kv": "num_kv_heads",
              "n_embed": "hidden_size"}
# Qwen (1) and Molmo give each of their MLP's two input projections intermediate_size // 2 (one fused
# projection, split in two by the modeling code); every other model type gives the per-projection width.
HALVED_INTERMEDIATE = ("qwen", "molmo")
ACTIVATION_KEYS = ("hidden_act", "hidden_activation", "activation_function", "activation_type")
# Activations that are themselves gated linear units (OLMo's activation_type, Jais's and Phi-3-small's
# hidden_act): the MLP is gated whatever the model type.
GLU_ACTIVATIONS = ("swiglu", "geglu", "reglu", "gegelu")
# OLMo's own (hf_olmo) layout gives the MLP's fused input projection: mlp_hidden_size, or mlp_ratio x d_model;
# with a GLU activation its code halves it between the gate and the up projection.
FUSED_MLP_KEYS = ("mlp_hidden_size", "mlp_ratio")
# Two-matrix (non-gated) MLPs, whatever their activation (Persimmon/Fuyu and Nemotron use squared ReLU, the
# BERT/CLIP/SigLIP/Whisper-style encoders GELU); every other model type is taken as gated (LLaMA-style).
NON_GATED = ("gpt2", "gpt_neox", "gptj", "gpt_neo", "gpt_neox_japanese", "opt", "phi", "phi-msft",
             "mixformer-sequential", "falcon", "bloom",
             "gpt_bigcode", "codegen", "mpt", "starcoder2", "persimmon", "fuyu", "nemotron", "arcee", "nanochat",
             "apertus", "jais2", "biogpt", "xglm", "git", "kosmos-2", "kosmos_2_text_model", "bart", "mbart",
             "bert", "roberta", "clip", "clip_text_model", "clip_vision_model", "siglip", "siglip_text_model",
             "siglip_vision_model", "whisper")
# Expert counts (Mixtral, Qwen-MoE, DeepSeek-MoE, DBRX/OLMoE) and the fields that go with them; DBRX keeps
# its MLP's settings in a nested ``ffn_config``.
MOE_COUNTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
MOE_FIELDS = ("num_experts_per_tok", "n_shared_experts", "moe_intermediate_size", "shared_expert_intermediate_size",
              "moe_top_k")
MOE_NESTED = ("ffn_config", "moe_config")
# Mixture-of-experts model types, refused even when the file leaves the expert count to the class default.
MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_vl_moe", "qwen3_vl_moe_text", "deepseek_v2",
             "deepseek_v3", "dbrx", "olmoe", "phimoe", "granitemoe", "granitemoeshared", "granitemoehybrid", "jetmoe",
             "llama4", "llama4_text", "gpt_oss", "glm4_moe", "ernie4_5_moe", "minimax", "hunyuan_v1_moe",
             "cohere2_moe", "lfm2_moe", "flex_olmo", "bailing_moe", "dots1", "switch_transformers", "nllb-moe")
# Where an omni model nests its decoder one level deeper (Qwen2.5-Omni: thinker_config.text_config).
CONTAINERS = ("thinker_config",)
# Recurrent and state-space model types (and hybrids of them): no attention layers to price.
NOT_TRANSFORMERS = ("rwkv", "rwkv5", "rwkv6", "rwkv7", "mamba", "mamba2", "falcon_mamba", "recurrent_gemma",
                    "xlstm", "jamba", "zamba", "zamba2", "bamba", "falcon_h1", "nemotron_h", "lfm2", "lfm2_vl")
# ... and keys only state-space models carry (the mamba_ssm package's config.json has no model_type at all)
SSM_KEYS = ("ssm_cfg", "ssm_config", "ssm_state_size", "mamba_d_state", "d_state", "state_size", "time_step_rank")
# Encoder-decoder model types (T5 is BLIP-2's and InstructBLIP's other language model): two stacks, one of
# them reading the other through cross-attention; priced as one decoder they would be silently wrong.
ENCODER_DECODER_TYPES = ("t5", "mt5", "umt5", "longt5", "switch_transformers", "bart", "mbart", "pegasus",
                         "pegasus_x", "marian", "blenderbot", "blenderbot-small", "m2m_100", "nllb-moe", "plbart",
                         "prophetnet", "led", "fsmt", "whisper", "florence2_language", "pix2struct",
                         "pop2piano", "seamless_m4t", "t5gemma")
# Decoders whose layers differ in kind from one another beyond their widths: Gemma 3n (per-layer embeddings,
# AltUp, LAuReL, layers sharing another's K/V cache); Nemotron-NAS/DeciLM's block_configs (layers without
# attention or MLP, each its own width); CogVLM/CogAgent (a second, "visual expert", set of weights in every
# layer for the image tokens: as many weights again as the language model's, not modelled).
UNLIKE_LAYER_TYPES = ("gemma3n", "gemma3n_text", "nemotron-nas", "cogvlm", "cogvlm2", "cogagent")
UNLIKE_LAYER_ARCHITECTURES = ("CogVLM", "CogAgent")
# Decoders that add low-rank adapter weights for one modality to every layer: InternLM-XComposer2's Partial LoRA
# (rank 256 on every projection, applied to the image tokens only; its remote code builds it whatever the file
# says) and Phi-4-multimodal's vision and speech LoRA (rank 256 and 320, switched on for the whole sequence when
# that modality is in it; its phi4mm code always builds them, and its file names them in vision_lora / speech_lora).
# Their weights and FLOPs are not in a dense decoder's; priced as one the image tokens would be too cheap.
ADAPTER_TYPES = ("internlmxcomposer2", "phi4mm")
ADAPTER_ARCHITECTURES = ("InternLMXComposer2", "Phi4MM")
ADAPTER_KEYS = ("vision_lora", "speech_lora")
# Layer kinds (in layer_types and the like) that are not softmax self-attention.
NON_ATTENTION_LAYERS = ("mamba", "conv", "linear", "rwkv", "ssm", "recurrent", "lstm", "delta", "retention")
# Decoders whose language model interleaves cross-attention layers to image states outside the sequence.
CROSS_ATTENTION_TYPES = ("mllama", "mllama_text_model", "idefics")
# Model types whose configuration class ties the input and output embeddings unless the file says otherwise
# (PretrainedConfig's own default), for the fallback without transformers: the decoder and VLM types of
# transformers 5.24 whose default configuration has tie_word_embeddings true (a test checks these against
# the installed transformers), and remote-code types whose class keeps PretrainedConfig's tie (Phi-3-small's
# phi3small: its LM head is the embedding). Every other type defaults to untied, as LlamaConfig does.
TIED_BY_DEFAULT = ("aya_vision", "biogpt", "bloom", "cohere", "cohere2", "cohere2_vision", "csm", "ctrl",
                   "ernie4_5", "falcon", "gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text",
                   "gemma4", "gemma4_text", "got_ocr2", "gpt-sw3", "gpt2", "gpt_bigcode", "gpt_neo",
                   "gpt_neox_japanese", "hunyuan_vl", "hunyuan_vl_text", "kosmos-2", "kosmos_2_text_model", "minicpm3",
                   "modernbert-decoder", "mpt", "openai-gpt", "opt", "paligemma", "phi3small", "qwen2_5_omni",
                   "qwen2_5_omni_text", "qwen2_5_omni_thinker", "smollm3", "starcoder2", "vaultgemma", "xglm")

# Built-in fallback: the defaults of transformers' LlamaConfig, GemmaConfig and GPT2Config, which published
# configs omit (LLaVA's text_config, Gemma's tied embeddings, GPT-2's n_inner: null = 4 x hidden).
FALLBACK_DEFAULTS = {
    "llama": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, intermediate_size=11008,
                  vocab_size=32000, tie_word_embeddings=False, hidden_act="silu"),
    "gemma": dict(num_hidden_layers=28, hidden_size=3072, num_attention_heads=16, num_key_value_heads=16,
                  head_dim=256, intermediate_size=24576, vocab_size=256000, tie_word_embeddings=True,
                  hidden_act="gelu_pytorch_tanh"),
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_inner=None, vocab_size=50257, tie_word_embeddings=True,
                 activation_function="gelu_new"),
    # Mistral and Qwen 2 (LLaVA-NeXT's and LLaVA-OneVision's language models: llava-hf's files omit the
    # values equal to these); head_dim is hidden / heads unless the file says otherwise
    "mistral": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                    intermediate_size=14336, vocab_size=32000, tie_word_embeddings=False, hidden_act="silu"),
    "qwen2": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                  intermediate_size=22016, vocab_size=151936, tie_word_embeddings=False, hidden_act="silu"),
    # Gemma 2 and Gemma 3's head_dim (256) is not hidden / heads, and their files may omit it
    "gemma2": dict(num_hidden_layers=26, hidden_size=2304, num_attention_heads=8, num_key_value_heads=4,
                   head_dim=256, intermediate_size=9216, vocab_size=256000, tie_word_embeddings=True,
                   hidden_activation="gelu_pytorch_tanh"),
    "gemma3_text": dict(num_hidden_layers=26, hidden_size=2304, num_attention_heads=8, num_key_value_heads=4,
                        head_dim=256, intermediate_size=9216, vocab_size=262208, tie_word_embeddings=True,
                        hidden_activation="gelu_pytorch_tanh"),
}


@dataclass
class HfModel:
    """ModelSpec fields read from a config.json, and where each missing one should have been."""
    file: str
    fields: dict[str, Any]
    missing: dict[str, str] = field(default_factory=dict)   # ModelSpec field -> key path in ``file``
    model_type: str | None = None
    prefix: str = ""                                        # key path of the language model's config in ``file``
    window_rule: Any = None    # num_layers -> how many of them use the sliding window (None: the model has none)


def config_file(path: Path) -> Path:
    """``path`` itself, or the config.json in a model folder (or in its ``llm/`` sub-folder, as VILA ships)."""
    if path.is_dir():
        for cand in (path / "config.json", path / "llm" / "config.json"):
            if cand.is_file():
                return cand
        raise ScenarioError(None, "model.hf_config", f"a config.json file or a model folder holding one, got the "
                            f"folder {path} without config.json")
    return path


def _transformers_mapping():
    try:
        from transformers import CONFIG_MAPPING
    except ImportError:
        return None
    return CONFIG_MAPPING


def _sub_config(raw: dict, file: Path, outer: str = "") -> tuple[dict, str, Path]:
    """The language model's config dict, its key prefix, and the file it came from (``outer``: the prefix
    of ``raw`` itself inside the file, for messages)."""
    for key in CONTAINERS:
        inner = raw.get(key)
        if key in raw and inner is not None and not isinstance(inner, dict):
            raise ScenarioError(str(file), f"{outer}{key}", f"a mapping holding the language model's config, got "
                                f"{describe(inner)}")
        if isinstance(inner, dict) and any(k in inner for k in NESTED):
            return _sub_config(inner, file, f"{outer}{key}.")
    for key in NESTED:
        sub = raw.get(key)
        if isinstance(sub, dict):
            return sub, f"{outer}{key}.", file
        # (VILA's llm_cfg / llm_config may name the llm/ sub-folder instead: a string there is not an error)
        if key in raw and sub is not None and not (isinstance(sub, str) and key in ("llm_cfg", "llm_config")):
            raise ScenarioError(str(file), f"{outer}{key}", f"a mapping holding the language model's config, got "
                                f"{describe(sub)}")
    # VILA (model_type llava_llama) may keep its language model in an llm/ sub-folder; the LLaVA codebase saves the
    # same model type with the decoder's own keys at the top level (its LlavaConfig is a LlamaConfig), read as is
    own_sizes = any(raw.get(k) is not None for k in ("num_hidden_layers", "hidden_size"))
    if any(k in raw for k in ("llm_cfg", "llm_config")) or (raw.get("model_type") == "llava_llama" and not own_sizes):
        llm = file.parent / "llm" / "config.json"
        if llm.is_file():
            return _load(llm), "", llm
        raise ScenarioError(str(file), f"{outer}llm_cfg", f"the language model's config, inline or in {llm}, got "
                            f"neither")
    return raw, outer, file


def _load(file: Path) -> dict:
    return read_document(file, what="config.json", fmt="json")


def _getter(cfg):
    """``get(key)`` on a config.json mapping or on transformers' configuration object alike."""
    return cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))


ENCODER_DECODER_REFUSAL = "a decoder-only language model (encoder-decoder models are not modelled)"
UNLIKE_LAYERS_REFUSAL = ("a decoder of alike layers (per-layer embeddings, layers without attention or MLP, shared K/V "
                         "caches and modality-expert weights are not modelled)")
CROSS_ATTENTION_REFUSAL = ("a decoder of self-attention layers (cross-attention layers reading image states outside "
                           "the sequence are not modelled)")
ADAPTER_REFUSAL = ("a decoder whose weights are the same for every token (modality-specific adapter weights, "
                   "such as InternLM-XComposer2's Partial LoRA or Phi-4-multimodal's vision and speech LoRA, are not "
                   "modelled; give the model fields explicitly to price the base decoder alone)")


def _check_decoder(cfg, types, prefix: str, file: Path) -> None:
    """Refuse what a dense self-attention decoder cannot describe: recurrent and state-space models and their
    hybrids, and decoders with cross-attention layers (Llama 3.2 Vision's, Idefics 1's, whose image states
    never enter the sequence). ``cfg``: the file's dict or transformers' object; ``types``: the model types
    that apply (the language model's and the file's)."""
    get = _getter(cfg)
    for t in types:
        if t in NOT_TRANSFORMERS:
            raise ScenarioError(str(file), f"{prefix}model_type", f"a transformer decoder (recurrent and state-space "
                                f"layers are not modelled), got model_type {t!r}")
    if isinstance(cfg, dict):
        for key in SSM_KEYS:
            if cfg.get(key) is not None:
                raise ScenarioError(str(file), f"{prefix}{key}", f"a transformer decoder (recurrent and state-space "
                                    f"layers are not modelled), got the state-space setting {key}")
    encdec = get("is_encoder_decoder")
    if isinstance(cfg, dict) and encdec is not None and not isinstance(encdec, bool):
        raise ScenarioError(str(file), f"{prefix}is_encoder_decoder", f"true or false, got {describe(encdec)}")
    for t in types:
        if t in ENCODER_DECODER_TYPES:
            raise ScenarioError(str(file), f"{prefix}model_type", f"{ENCODER_DECODER_REFUSAL}, got model_type {t!r}")
    if encdec is True:
        raise ScenarioError(str(file), f"{prefix}is_encoder_decoder", f"{ENCODER_DECODER_REFUSAL}, got "
                            f"is_encoder_decoder true")
    for t in types:
        if t in UNLIKE_LAYER_TYPES:
            raise ScenarioError(str(file), f"{prefix}model_type", f"{UNLIKE_LAYERS_REFUSAL}, got model_type {t!r}")
    # modality-specific LoRA adapters: by their settings where the file names them, else by the model type
    if isinstance(cfg, dict):
        for key in ADAPTER_KEYS:
            adapter = cfg.get(key)
            if adapter is not None and not isinstance(adapter, dict):
                raise ScenarioError(str(file), f"{prefix}{key}", f"a mapping (the adapter's settings) or null, got "
                                    f"{describe(adapter)}")
            if adapter is not None:
                rank = adapter.get("r")
                shown = f"a rank-{rank} adapter" if isinstance(rank, int) and not isinstance(rank, bool) else \
                    "an adapter"
                raise ScenarioError(str(file), f"{prefix}{key}", f"{ADAPTER_REFUSAL}, got {shown} in {key}")
    for t in types:
        if t in ADAPTER_TYPES:
            raise ScenarioError(str(file), f"{prefix}model_type", f"{ADAPTER_REFUSAL}, got model_type {t!r}")
    blocks = get("block_configs")
    if blocks is not None:
        shown = f"a list of {len(blocks)} per-layer blocks" if isinstance(blocks, (list, tuple)) else describe(blocks)
        raise ScenarioError(str(file), f"{prefix}block_configs", f"{UNLIKE_LAYERS_REFUSAL}, got {shown}")
    for key in ("layer_types", "layers_block_type", "block_types"):
        kinds = get(key)
        if kinds is not None and not isinstance(kinds, (list, tuple)):
            raise ScenarioError(str(file), f"{prefix}{key}", f"a list of layer kinds, got {describe(kinds)}")
        if kinds is not None:
            other = sorted({str(k) for k in kinds if any(w in str(k).lower() for w in NON_ATTENTION_LAYERS)})
            if other:
                shown = ", ".join(describe(k, 40) for k in other[:4]) + (", ..." if len(other) > 4 else "")
                raise ScenarioError(str(file), f"{prefix}{key}", f"self-attention layers (recurrent, convolution and "
                                    f"linear-attention layers are not modelled), got {shown} layers")
    cross = get("cross_attention_layers")
    if cross is not None and not isinstance(cross, (list, tuple)):
        raise ScenarioError(str(file), f"{prefix}cross_attention_layers", f"a list of layer indices, got "
                            f"{describe(cross)}")
    if cross:
        shown = ", ".join(describe(x, 20) for x in list(cross)[:8]) + (", ..." if len(cross) > 8 else "")
        plural = "layer" if len(cross) == 1 else "layers"
        raise ScenarioError(str(file), f"{prefix}cross_attention_layers", f"{CROSS_ATTENTION_REFUSAL}, got "
                            f"{len(cross)} cross-attention {plural} [{shown}]")
    for t in types:
        if t in CROSS_ATTENTION_TYPES:
            raise ScenarioError(str(file), f"{prefix}model_type", f"{CROSS_ATTENTION_REFUSAL}, got model_type {t!r}")


def _check_dense(cfg, prefix: str, file: Path, types=()) -> None:
    """Refuse mixture-of-experts configs: an expert count above one, a router's top-k without a count, or a
    mixture-of-experts model type whose file leaves the count to its class; counts must be integers."""
    get = _getter(cfg)
    for key in MOE_NESTED:
        nested = get(key)
        if isinstance(nested, dict):
            _check_dense(nested, f"{prefix}{key}.", file)
        elif nested is not None and hasattr(nested, "to_dict"):  # transformers' nested config objects
            _check_dense(nested.to_dict(), f"{prefix}{key}.", file)
        elif nested is not None and isinstance(cfg, dict):
            raise ScenarioError(str(file), f"{prefix}{key}", f"a mapping, got {describe(nested)}")

    def integer(key):
        n = get(key)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
            raise ScenarioError(str(file), f"{prefix}{key}", f"an integer, got {describe(n)}")
        return n

    counts = {k: integer(k) for k in MOE_COUNTS}
    topk = {k: integer(k) for k in ("num_experts_per_tok", "moe_top_k")}
    def tail(named):
        extra = ", ".join(f"{k} {describe(get(k), 20)}" for k in MOE_FIELDS if k != named and get(k) is not None)
        return (f", {extra}" if extra else "") + "; to price its dense equivalent give the model fields " \
            "explicitly instead of hf_config"
    for key, n in counts.items():
        if n is not None and n > 1:
            raise ScenarioError(str(file), f"{prefix}{key}", f"a dense decoder (mixture-of-experts layers are not "
                                f"modelled), got a mixture-of-experts config with {key} {n}" + tail(key))
    given = [n for n in counts.values() if n is not None]
    for key, k in topk.items():
        if k is not None and (k > 1 or (k >= 1 and not given)):
            raise ScenarioError(str(file), f"{prefix}{key}", f"a dense decoder (mixture-of-experts layers are not "
                                f"modelled), got a router choosing {k} expert{'s' if k != 1 else ''} a token" + tail(key))
    for t in types:
        if t in MOE_TYPES and not given:
            raise ScenarioError(str(file), f"{prefix}model_type", f"a dense decoder (mixture-of-experts layers are "
                                f"not modelled), got model_type {describe(t)}" + tail(None))
    # multi-head latent attention (DeepSeek-V2/V3, MiniCPM3, Kimi): K and V are projected up from a compressed
    # latent of kv_lora_rank, with their own head dims; priced as heads x head_dim attention it would be wrong
    for key in ("kv_lora_rank", "q_lora_rank"):
        r = get(key)
        if r is not None and not (isinstance(r, int) and not isinstance(r, bool) and r == 0):
            raise ScenarioError(str(file), f"{prefix}{key}", f"a decoder of multi-head attention (multi-head latent "
                                f"attention, MLA, is not modelled), got {key} {describe(r, 20)}")


def _check_switches(sub: dict, prefix: str, file: Path) -> None:
    """Values that decide the shape without being a size: true/false switches, the tie, the activation's name
    and MPT's expansion ratio, checked strictly (a string "true" is not true)."""
    for key in ("multi_query", "new_decoder_architecture", "multi_query_attention", "tie_word_embeddings"):
        v = sub.get(key)
        if v is not None and not isinstance(v, bool):
            raise ScenarioError(str(file), f"{prefix}{key}", f"true or false, got {describe(v)}")
    for key in ACTIVATION_KEYS:
        v = sub.get(key)
        if v is not None and not isinstance(v, str):
            raise ScenarioError(str(file), f"{prefix}{key}", f"an activation function's name, got {describe(v)}")
    v = sub.get("expansion_ratio")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e6):
        raise ScenarioError(str(file), f"{prefix}expansion_ratio", f"a positive number, got {describe(v)}")


def _known_type(t: str, mapping) -> bool:
    """Whether a model type is one this module or the installed transformers knows."""
    lists = (NON_GATED, TIED_BY_DEFAULT, FALLBACK_DEFAULTS, HALVED_INTERMEDIATE, MOE_TYPES, NOT_TRANSFORMERS,
             ENCODER_DECODER_TYPES, UNLIKE_LAYER_TYPES, CROSS_ATTENTION_TYPES, ADAPTER_TYPES)
    return any(t in known for known in lists) or (mapping is not None and t in mapping)


def _base_type(t: str | None, mapping) -> str | None:
    """The decoder a remote-code model type is named after, for a type nobody knows: projects that wrap a decoder
    name their type <project>-<decoder> or <project>_<decoder> (Bunny's bunny-phi, bunny-phi3 and bunny-llama,
    LLaVA's llava_llama, llava_qwen and llava_mpt) and subclass that decoder's configuration class, so the MLP's
    kind and the embedding tie default as that decoder's do. The longest known suffix after a separator wins;
    None when the type is known itself or ends in no known type."""
    if t is None or _known_type(t, mapping):
        return None
    for i, ch in enumerate(t):
        if ch in "-_" and t[i + 1:] and _known_type(t[i + 1:], mapping):
            return t[i + 1:]
    return None


def read_hf_config(path: Path) -> HfModel:
    """The ModelSpec fields of the language model in a config.json (or model folder)."""
    try:
        file = config_file(path)
        raw = _load(file)
    except UnreadableFile as err:
        raise err.for_field("model.hf_config")
    top_type = raw.get("model_type")
    if top_type is not None and (not isinstance(top_type, str) or not top_type.strip()):
        raise ScenarioError(str(file), "model_type", f"a model type name, got {describe(top_type)}")
    sub, prefix, src = _sub_config(raw, file)
    sub_type = sub.get("model_type") if sub is not raw else top_type
    if sub_type is not None and (not isinstance(sub_type, str) or not sub_type.strip()):
        raise ScenarioError(str(src), f"{prefix}model_type", f"a model type name, got {describe(sub_type)}")
    if sub_type in TYPE_ALIASES:  # an older name of a known type: read it as that type, keys included
        renamed = {ALIAS_KEYS.get(k, k) if ALIAS_KEYS.get(k) not in sub else k: v for k, v in sub.items()}
        renamed["model_type"] = TYPE_ALIASES[sub_type]
        if sub is raw:
            raw = renamed
        sub = renamed
    top_type, sub_type = TYPE_ALIASES.get(top_type, top_type), TYPE_ALIASES.get(sub_type, sub_type)
    if sub_type is None and sub is not raw and top_type in LLAMA_BY_DEFAULT:
        sub_type = "llama"
    elif sub_type is None and sub is not raw and top_type in NON_GATED:  # CLIP's text_config, say
        sub_type = top_type
    types = tuple(t for t in (sub_type, top_type) if t is not None)
    _check_decoder(sub, types, prefix, src)
    _check_dense(sub, prefix, src, types)
    _check_switches(sub, prefix, src)
    archs = raw.get("architectures")
    for arch in archs if isinstance(archs, list) else []:
        for prefixes, refusal in ((UNLIKE_LAYER_ARCHITECTURES, UNLIKE_LAYERS_REFUSAL),
                                  (ADAPTER_ARCHITECTURES, ADAPTER_REFUSAL)):
            if isinstance(arch, str) and arch.startswith(prefixes):
                raise ScenarioError(str(file), "architectures", f"{refusal}, got {arch!r}")

    from .config import ModelSpec
    top = sub is raw   # (the language model is the file's top level: transformers reads its text config from it)
    sub = _per_layer_values(sub, prefix, src)
    if top:
        raw = sub
    for name, keys in KEYS.items():  # the file's own values are checked before any library sees them
        k = next((k for k in keys if sub.get(k) is not None), None)
        if k is not None:
            _checked(ModelSpec, name, sub[k], str(src), f"{prefix}{k}")
    _check_window_value(sub, prefix, src, types=types)   # (after the depth, which layer_types is counted against)
    if not top and src == file:      # a VLM's own window keys go to its configuration class too
        _check_window_value(raw, "", file, depth=False, types=(top_type,) if top_type else ())
    mapping = _transformers_mapping()
    obj = None
    if mapping is not None:
        obj = _with_transformers(mapping, raw, top_type, sub, sub_type, prefix, src)
    if obj is not None:
        _check_decoder(obj, (), prefix, src)
        _check_dense(obj, prefix, src)
        if not _reads_this_layout(obj, sub):
            obj = None
    defaults = {} if obj is not None else FALLBACK_DEFAULTS.get(sub_type or "", {})

    def lookup(keys):
        """(value, key found) from the language config, then transformers' object, then the fallback table."""
        for k in keys:
            if k in sub and sub[k] is not None:
                return sub[k], k
        for k in keys:
            if obj is not None and getattr(obj, k, None) is not None:
                return getattr(obj, k), k
            if k in defaults and defaults[k] is not None:
                return defaults[k], k
        return None, keys[0]

    out = HfModel(file=str(src), fields={}, model_type=sub_type, prefix=prefix)
    # multi-query attention spelled as a switch: Falcon-7B and GPT-BigCode keep one K/V head (transformers'
    # Falcon object still reports one per head), ChatGLM multi_query_group_num of them
    kv_switch = None
    if sub.get("multi_query") is True and not sub.get("new_decoder_architecture") \
            and all(sub.get(k) is None for k in KEYS["num_key_value_heads"]):
        kv_switch = (1, "multi_query")
    elif sub.get("multi_query_attention") is True and sub.get("multi_query_group_num") is not None:
        kv_switch = (sub["multi_query_group_num"], "multi_query_group_num")
    elif sub.get("multi_query_attention") is True and all(sub.get(k) is None for k in KEYS["num_key_value_heads"]):
        kv_switch = (1, "multi_query_attention")  # OLMo's: one K/V head
    act, _ = lookup(ACTIVATION_KEYS)
    act = act if isinstance(act, str) else "silu"
    glu = act.lower() in GLU_ACTIVATIONS
    # a remote-code type named after the decoder it wraps (bunny-phi: Phi-2's two-matrix MLP) is that decoder
    kind = _base_type(sub_type, mapping) or sub_type
    gated = glu or kind not in NON_GATED
    for name, keys in KEYS.items():
        if name == "num_key_value_heads" and kv_switch is not None:
            out.fields[name] = _checked(ModelSpec, name, kv_switch[0], str(src), f"{prefix}{kv_switch[1]}")
            continue
        value, key = lookup(keys)
        if value is None:
            hidden = out.fields.get("hidden_size")
            ratio = sub.get("expansion_ratio")  # MPT: the MLP width as a multiple of the hidden size
            if name == "intermediate_size" and hidden is not None and isinstance(ratio, (int, float)) \
                    and not isinstance(ratio, bool) and ratio > 0 and float(ratio * hidden).is_integer():
                out.fields[name] = _checked(ModelSpec, name, int(ratio * hidden), str(src), f"{prefix}expansion_ratio")
                continue
            fused = next((k for k in FUSED_MLP_KEYS if sub.get(k) is not None), None)
            if name == "intermediate_size" and fused is not None and hidden is not None:
                width = sub[fused] * hidden if fused == "mlp_ratio" else sub[fused]
                if isinstance(width, float) and not isinstance(width, bool) and width.is_integer():
                    width = int(width)
                width = _checked(ModelSpec, name, width, str(src), f"{prefix}{fused}")
                if glu and width % 2:
                    raise ScenarioError(str(src), f"{prefix}{fused}", f"an even width (a {act} MLP halves it "
                                        f"between its gate and up projections), got {width}")
                out.fields[name] = width // 2 if glu else width
                continue
            if name == "intermediate_size" and (sub_type in NON_GATED or "n_inner" in sub):
                if hidden is not None:  # GPT-2 style: n_inner null means 4 x hidden
                    out.fields[name] = 4 * hidden
                    continue
            if name not in ("num_key_value_heads", "head_dim"):
                out.missing[name] = f"{prefix}{keys[0]}"
            continue
        out.fields[name] = _checked(ModelSpec, name, value, str(src), f"{prefix}{key}")
        if name == "intermediate_size" and sub_type in HALVED_INTERMEDIATE and key == "intermediate_size":
            if out.fields[name] % 2:
                raise ScenarioError(str(src), f"{prefix}{key}", f"an even number ({sub_type} halves it between its "
                                    f"two MLP input projections), got {out.fields[name]}")
            out.fields[name] //= 2
    if "num_key_value_heads" not in out.fields and "num_attention_heads" in out.fields:
        out.fields["num_key_value_heads"] = out.fields["num_attention_heads"]  # no GQA key: one K/V head per head
    # (OLMo's own layout says weight_tying)
    tie = next((d[k] for d in (sub, raw) for k in ("tie_word_embeddings", "weight_tying") if isinstance(d.get(k), bool)),
               None)
    if tie is None:
        tie = getattr(obj, "tie_word_embeddings", None) if obj is not None else defaults.get("tie_word_embeddings")
    if tie is None and obj is None and (sub_type or top_type) is not None:
        tie = (kind or top_type) in TIED_BY_DEFAULT
    if tie is not None:
        out.fields["tie_word_embeddings"] = bool(tie)
    out.fields["mlp"] = ("geglu" if gated else "gelu") if "gelu" in act else ("swiglu" if gated else "gelu")
    window, out.window_rule = _sliding_window(sub, obj, kind, out.fields.get("num_layers"), prefix, src)
    out.fields.update(window)
    name = raw.get("_name_or_path") or sub.get("_name_or_path") or top_type or sub_type or "hf_config"
    out.fields["name"] = str(name)[:200]
    return out


# Which layers of a model type attend within its ``sliding_window`` when the file and transformers list no
# ``layer_types`` (transformers' configuration classes, read 2026-11-28, decide the same):
# every layer, whatever the file's layer_types or use_sliding_window say (transformers' Mistral ignores both)
EVERY_LAYER_WINDOW = ("mistral", "mixtral", "phi3", "phimoe", "starcoder2")
# all but every n-th layer, n = ``sliding_window_pattern`` (Gemma 2: every other layer from the first)
PATTERNED_WINDOW = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6, "cohere2": 4}
# ... of which these ignore a sliding_window_pattern key (transformers' Gemma 2 alternates whatever it says)
FIXED_PATTERN = ("gemma2",)
# none unless ``use_sliding_window: true``, then the layers from ``max_window_layers`` on (Qwen 2 and the VLMs
# built on it publish a window they do not use); the default max_window_layers. Without use_sliding_window
# transformers drops the window, so even layers that layer_types calls sliding attend fully.
OPT_IN_WINDOW = {"qwen2": 28, "qwen3": 28, "qwen2_vl": 80, "qwen2_vl_text": 80, "qwen2_5_vl": 80,
                 "qwen2_5_vl_text": 80}
# The window of the model types whose configuration class has one by default (transformers 5.24), for a file that
# leaves the key out and no transformers to fill it in (an explicit null is no window, as there)
DEFAULT_WINDOW = {t: 4096 for t in ("mistral", "gemma2", "gemma3", "gemma3_text", "cohere2", "qwen2", "qwen3",
                                    "qwen2_vl", "qwen2_vl_text", "qwen2_5_vl", "qwen2_5_vl_text")}
# Any other model type ignores a sliding_window key (LLaMA's configuration keeps unknown keys, its layers
# attend fully) unless the file lists its layers' kinds.


# The layer kinds a layer_types list may name (transformers 5.24's ALLOWED_LAYER_TYPES; the kinds that are not
# self-attention are refused by _check_decoder before these are read); only "sliding_attention" uses the window.
LAYER_KINDS = ("full_attention", "sliding_attention", "chunked_attention", "window_attention", "indexed_attention",
               "compressed_sparse_attention", "heavily_compressed_attention", "minimax_m3_sparse", "conv", "moe",
               "hybrid", "hybrid_sliding", "reference_sliding_attention", "linear_attention", "sparse", "dense")
MAX_WINDOW_LAYER = 2**12   # max_window_layers and sliding_window_pattern: layer counts, bounded as num_layers is


def _check_window_value(sub: dict, prefix: str, file: Path, depth: bool = True, types: tuple = ()) -> None:
    """The keys that decide a file's sliding window, read strictly, before any library (transformers refuses some
    of these naming no key, and ignores others; _sliding_window would take a bad one for its type's default):
    sliding_window a number of tokens (0 or null: none), use_sliding_window true or false, max_window_layers and
    sliding_window_pattern layer counts (not null where ``types``, the model types that apply, read them),
    layer_types one known kind a layer (one for each of the file's layers, unless ``depth`` is false: a VLM's outer
    level, whose layer count may be its vision tower's)."""
    w = sub.get("sliding_window")
    if w is not None and (isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 2**40):
        raise ScenarioError(str(file), f"{prefix}sliding_window", f"a number of tokens (0 or null: no window), "
                            f"got {describe(w)}")
    use = sub.get("use_sliding_window")
    if use is not None and not isinstance(use, bool):
        raise ScenarioError(str(file), f"{prefix}use_sliding_window", f"true or false, got {describe(use)}")
    for key, lo, what in (("max_window_layers", 0, "the number of layers before the first windowed one"),
                          ("sliding_window_pattern", 1, "the period of the layers' kinds (every n-th layer attends "
                                                        "fully)")):
        v = sub.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_WINDOW_LAYER):
            raise ScenarioError(str(file), f"{prefix}{key}", f"{what}, from {lo} to {MAX_WINDOW_LAYER}, got "
                                f"{describe(v)}")
    # null where the model type reads the value (transformers computes the layers' kinds with it, and fails, or
    # refuses a null outright: Qwen 2/3's max_window_layers is an int)
    opt_in = next((t for t in types if t in OPT_IN_WINDOW), None)
    if "max_window_layers" in sub and sub["max_window_layers"] is None and (use is True or opt_in):
        why = "use_sliding_window is true" if use is True else f"model type {opt_in!r} reads it"
        raise ScenarioError(str(file), f"{prefix}max_window_layers", f"the number of layers before the first "
                            f"windowed one ({why}; leave it out for its default), got null")
    patterned = next((t for t in types if t in PATTERNED_WINDOW and t not in FIXED_PATTERN), None)
    if "sliding_window_pattern" in sub and sub["sliding_window_pattern"] is None and patterned:
        raise ScenarioError(str(file), f"{prefix}sliding_window_pattern", f"the period of the layers' kinds "
                            f"(model type {patterned!r} reads it; leave it out for its default), got null")
    kinds = sub.get("layer_types")
    if kinds is None:
        return
    if not isinstance(kinds, list):
        raise ScenarioError(str(file), f"{prefix}layer_types", f"a list of layer kinds, got {describe(kinds)}")
    bad = next((i for i, k in enumerate(kinds) if not isinstance(k, str) or k not in LAYER_KINDS), None)
    if bad is not None:
        raise ScenarioError(str(file), f"{prefix}layer_types", f"one layer kind a layer (such as 'full_attention' "
                            f"or 'sliding_attention'), got {describe(kinds[bad], 60)} for layer {bad}")
    layers = next((sub[k] for k in KEYS["num_layers"] if sub.get(k) is not None), None) if depth else None
    _check_kinds_per_layer(kinds, layers, prefix, file)


def _check_kinds_per_layer(kinds, layers, prefix: str, file: Path) -> None:
    """A layer_types list holds one kind for each of the decoder's ``layers`` (where both are known)."""
    if isinstance(kinds, list) and isinstance(layers, int) and len(kinds) != layers:
        raise ScenarioError(str(file), f"{prefix}layer_types", f"one kind for each of the {layers} layers, got "
                            f"{len(kinds)} kind{'s' if len(kinds) != 1 else ''}")


def _sliding_window(sub: dict, obj, kind: str | None, num_layers, prefix: str, file: Path):
    """(ModelSpec's ``sliding_window`` and ``sliding_window_layers``, or {} for none; the rule giving the count
    for a model of another depth, or None) for a decoder some of whose layers attend within a window of keys:
    the file's keys first, then transformers' object (which lists each layer's kind in ``layer_types`` for
    Gemma 2/3, Cohere 2 and Qwen 2/3), then the model type's rule."""
    def get(key):
        if key in sub:
            return sub[key]
        return getattr(obj, key, None) if obj is not None else None
    _check_kinds_per_layer(sub.get("layer_types"), num_layers, prefix, file)  # (the depth may be a default's)
    known = (*EVERY_LAYER_WINDOW, *PATTERNED_WINDOW, *OPT_IN_WINDOW)
    if kind not in known and kind:  # a remote-code variant named <decoder>_<suffix>: Phi-3-vision's phi3_v
        kind = next((kind[:i] for i, ch in enumerate(kind) if ch in "-_" and kind[:i] in known), kind)
    window = get("sliding_window")
    if window is None and "sliding_window" not in sub and obj is None:
        window = DEFAULT_WINDOW.get(kind)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1 or not isinstance(num_layers, int):
        return {}, None
    types = get("layer_types")
    if kind in OPT_IN_WINDOW and get("use_sliding_window") is not True:
        return {}, None
    if kind in EVERY_LAYER_WINDOW:
        def rule(n):
            return n
    elif isinstance(types, list) and types and all(isinstance(t, str) for t in types):
        flags = [t == "sliding_attention" for t in types]

        def rule(n):  # a shallower model keeps the first layers' kinds; a deeper one repeats the list
            return sum(flags[i % len(flags)] for i in range(n))
    elif kind in OPT_IN_WINDOW:
        first = get("max_window_layers")
        first = first if isinstance(first, int) and not isinstance(first, bool) and first >= 0 else OPT_IN_WINDOW[kind]

        def rule(n):
            return max(n - first, 0)
    elif kind in PATTERNED_WINDOW:
        pattern = None if kind in FIXED_PATTERN else get("sliding_window_pattern")
        pattern = pattern if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern >= 1 \
            else PATTERNED_WINDOW[kind]

        def rule(n):
            return n - n // pattern
    else:
        return {}, None
    count = rule(num_layers)
    return ({"sliding_window": window, "sliding_window_layers": count} if count else {}), rule


def _per_layer_values(sub: dict, prefix: str, file: Path) -> dict:
    """``sub`` with a per-layer list of a size (Gemma 3n's intermediate_size, DeciLM's K/V heads a layer) read as
    its one value where every layer agrees; layers of different widths are refused, naming the key."""
    out = dict(sub)
    for keys in KEYS.values():
        for k in keys:
            v = sub.get(k)
            if not isinstance(v, list) or not v:
                continue
            distinct = sorted({repr(x) for x in v})
            if len(distinct) > 1:
                shown = ", ".join(distinct[:4]) + (", ..." if len(distinct) > 4 else "")
                raise ScenarioError(str(file), f"{prefix}{k}", f"the same value for every layer (layers of different "
                                    f"shapes are not modelled), got {len(distinct)} different values: {shown}")
            out[k] = v[0]
    return out


def _reads_this_layout(obj, sub: dict) -> bool:
    """Whether transformers' configuration object holds the file's own sizes. A remote-code config published
    under a model type transformers also knows (OLMo's first release, hf_olmo: d_model, n_heads, mlp_ratio under
    model_type olmo) builds an object that ignores those keys and reports its class defaults instead; that
    object's defaults belong to another layout and must not fill in what the file omits."""
    for keys in KEYS.values():
        mine = next((sub[k] for k in keys if sub.get(k) is not None), None)
        theirs = next((getattr(obj, k) for k in keys if getattr(obj, k, None) is not None), None)
        if mine is not None and theirs is not None and mine != theirs and not isinstance(theirs, (list, dict)):
            return False
    return True


def _with_transformers(mapping, raw, top_type, sub, sub_type, prefix, src):
    """transformers' configuration object for the language model (its defaults filled in), or None when
    transformers does not know the model type."""
    import logging
    import warnings
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with warnings.catch_warnings():  # deprecation notices about old config layouts are not the user's error
        warnings.simplefilter("ignore")
        return _construct(mapping, raw, top_type, sub, sub_type, prefix, src)


def _construct(mapping, raw, top_type, sub, sub_type, prefix, src):
    built = raw  # the mapping handed to the constructor that may fail
    try:
        if top_type in mapping and sub is raw:
            full = mapping[top_type](**{k: v for k, v in raw.items() if k != "model_type"})
            return full.get_text_config(decoder=True) if hasattr(full, "get_text_config") else full
        if top_type in mapping and prefix == "text_config.":
            full = mapping[top_type](**{k: v for k, v in raw.items() if k != "model_type"})
            return full.get_text_config(decoder=True)
        if sub_type in mapping:
            built = sub
            return mapping[sub_type](**{k: v for k, v in sub.items() if k != "model_type"})
    except Exception as exc:  # noqa: BLE001 - a third-party constructor: any failure is a bad config file
        text = " ".join(str(exc).split())
        # name the key where the library names a field of the mapping it was given and nothing nested could
        # hold a field of the same name (a vision_config beside the text_config, say)
        m = re.search(r"field '([A-Za-z_][A-Za-z0-9_]*)'", text)
        nested = any(isinstance(v, dict) and k.endswith("_config") for k, v in built.items())
        where = prefix if built is sub else ""
        field = f"{where}{m.group(1)}" if m and m.group(1) in built and not nested else (prefix.rstrip(".") or "<file>")
        if not m and "validate_layer_type" in text:  # its validator names no field: the level that lists kinds
            mine = next((p for p, d in ((prefix, sub), ("", raw)) if isinstance(d.get("layer_types"), list)), None)
            field = f"{mine}layer_types" if mine is not None else field
        raise ScenarioError(str(src), field, f"a config transformers can read, got {type(exc).__name__}: {text[:200]}")
    return None


def _checked(model, name: str, value, where: str, key: str):
    """A config value validated against ModelSpec's type and bounds (strictly: true is not 1), blaming the key."""
    from .strict import error_from_validation
    f = model.model_fields[name]
    try:
        return TypeAdapter(Annotated[f.annotation, Strict(), *f.metadata]).validate_python(value)
    except ValidationError as exc:
        raise error_from_validation(exc, value, where=where, prefix=key) from None
