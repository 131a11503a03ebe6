"""Tiny random models of every decoder-only text family that TransformerLens 4.3 bridges and transformers 5.23
has a class for, keeping each family's real attention layout (GQA/MQA, head_dim != hidden/heads, qk-norm,
partial rotary, sliding/full ``layer_types``, MoE blocks, parallel attention, learned sinks, latent attention).

``FAMILIES`` says, per family, whether ``attention_stats`` runs it on the fused path or why only the eager
backend can (``status``); ``tests/test_families.py`` checks every entry against HF eager ``output_attentions``
(fused) or checks the one-line refusal (eager only). ``family_table()`` renders the README table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from interp.errors import UnknownNameError

TESTED = "2026-12-07"
FUSED, EAGER, NONE = "fused", "eager only", "no attention"

# Shared tiny sizes: 4 query heads over 2 KV heads (GQA) of width 24 != 64 / 4, MoE with 4 experts (2 active),
# sliding window 5 (shorter than the 13-token test prompts). Keys a family's config does not declare are dropped.
BASE: dict[str, Any] = dict(
    vocab_size=97, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=24, max_position_embeddings=256, initializer_range=0.2,
    num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
    n_shared_experts=1, first_k_dense_replace=0, n_group=1, topk_group=1, sliding_window=5,
    kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
    pad_token_id=0, bos_token_id=1, eos_token_id=2,
    n_embd=64, n_layer=2, n_head=4, n_positions=256, ffn_dim=64,
)
MIXED = ["sliding_attention", "full_attention"]


@dataclass(frozen=True)
class Family:
    cls: str  # the transformers class
    layout: str  # what of the real layout the tiny config keeps
    status: str = FUSED
    reason: str = ""
    overrides: dict = field(default_factory=dict)


def _f(cls, layout, status=FUSED, reason="", **overrides):
    return Family(cls, layout, status, reason, overrides)


_NO_INTERFACE = "its attention does not dispatch through transformers' attention interface"
_HYBRID = "hybrid: attention in some layers only (others are state-space/recurrent/conv), which AttnStats' per-layer axis does not cover"
_SSM = "no attention (state-space / RNN)"

FAMILIES: dict[str, Family] = {
    "afmoe": _f("AfmoeForCausalLM", "GQA, MoE, sliding/full layers", layer_types=MIXED),
    "apertus": _f("ApertusForCausalLM", "GQA, qk-norm"),
    "arcee": _f("ArceeForCausalLM", "GQA"),
    "bamba": _f("BambaForCausalLM", "hybrid Mamba2 + attention", EAGER, _HYBRID),
    "bert-lm-head": _f("BertLMHeadModel", "BERT as a causal decoder (is_decoder)", is_decoder=True),
    "bitnet": _f("BitNetForCausalLM", "GQA, ternary linear layers", head_dim=16),
    "bloom": _f("BloomForCausalLM", "ALiBi", EAGER, _NO_INTERFACE + " (ALiBi bias)"),
    "codegen": _f("CodeGenForCausalLM", "partial rotary, parallel attention", EAGER, _NO_INTERFACE),
    "cohere": _f("CohereForCausalLM", "GQA, parallel attention + MLP"),
    "cohere2": _f("Cohere2ForCausalLM", "GQA, sliding/full layers, parallel attention", layer_types=MIXED),
    "deepseek-v2": _f("DeepseekV2ForCausalLM", "multi-head latent attention (value heads narrower), MoE",
                      num_key_value_heads=4, head_dim=8),
    "deepseek-v3": _f("DeepseekV3ForCausalLM", "multi-head latent attention, MoE", num_key_value_heads=4, head_dim=8),
    "deepseek-v4": _f("DeepseekV4ForCausalLM", "sliding/compressed layers, learned sinks, MoE"),
    "ernie4.5": _f("Ernie4_5ForCausalLM", "GQA"),
    "ernie4.5-moe": _f("Ernie4_5_MoeForCausalLM", "GQA, MoE"),
    "exaone4": _f("Exaone4ForCausalLM", "GQA, qk-norm, sliding/full layers", layer_types=MIXED),
    "falcon": _f("FalconForCausalLM", "MQA, parallel attention", EAGER, _NO_INTERFACE, head_dim=None),
    "falcon-h1": _f("FalconH1ForCausalLM", "hybrid Mamba2 + attention", EAGER, _HYBRID),
    "falcon-mamba": _f("FalconMambaForCausalLM", "Mamba", NONE, _SSM),
    "flex-olmo": _f("FlexOlmoForCausalLM", "qk-norm, MoE"),
    "gemma": _f("GemmaForCausalLM", "MQA (1 KV head), head_dim != hidden/heads", num_key_value_heads=1),
    "gemma2": _f("Gemma2ForCausalLM", "GQA, sliding/full layers, logit softcap", layer_types=MIXED),
    "gemma3": _f("Gemma3ForCausalLM", "GQA, qk-norm, sliding/full layers", layer_types=MIXED),
    "gemma4": _f("Gemma4ForCausalLM", "GQA, qk-norm, sliding/full layers"),
    "glm": _f("GlmForCausalLM", "GQA, partial rotary"),
    "glm4": _f("Glm4ForCausalLM", "GQA, partial rotary"),
    "glm4-moe": _f("Glm4MoeForCausalLM", "GQA, partial rotary, MoE"),
    "glm4-moe-lite": _f("Glm4MoeLiteForCausalLM", "multi-head latent attention, MoE", num_key_value_heads=4, head_dim=8),
    "glm-moe-dsa": _f("GlmMoeDsaForCausalLM", "DeepSeek sparse attention", EAGER,
                      "sparse attention: an indexer picks each query's top-k keys through its own 4-D mask"),
    "gpt2": _f("GPT2LMHeadModel", "MHA, learned positions"),
    "gpt-bigcode": _f("GPTBigCodeForCausalLM", "MQA"),
    "gptj": _f("GPTJForCausalLM", "partial rotary, parallel attention", EAGER, _NO_INTERFACE),
    "gpt-neo": _f("GPTNeoForCausalLM", "global/local layers", EAGER, _NO_INTERFACE,
                  attention_types=[[["global", "local"], 1]], num_layers=2, window_size=4, head_dim=None),
    "gpt-neox": _f("GPTNeoXForCausalLM", "partial rotary, parallel residual"),
    "gpt-oss": _f("GptOssForCausalLM", "GQA, learned sinks (s_aux), sliding/full layers, MoE"),
    "granite": _f("GraniteForCausalLM", "GQA, scaled attention"),
    "granite-moe": _f("GraniteMoeForCausalLM", "GQA, MoE"),
    "granite-moe-hybrid": _f("GraniteMoeHybridForCausalLM", "hybrid Mamba2 + attention", EAGER, _HYBRID),
    "hrm-text": _f("HrmTextForCausalLM", "hierarchical recurrent modules", EAGER,
                   "its attention modules are re-run in recurrent cycles, so layer indices repeat"),
    "hunyuan-dense": _f("HunYuanDenseV1ForCausalLM", "GQA, qk-norm"),
    "jais2": _f("Jais2ForCausalLM", "GQA"),
    "jamba": _f("JambaForCausalLM", "hybrid Mamba + attention, MoE", EAGER, _HYBRID),
    "jetmoe": _f("JetMoeForCausalLM", "mixture of attention heads, MoE"),
    "laguna": _f("LagunaForCausalLM", "GQA"),
    "lfm2": _f("Lfm2ForCausalLM", "attention layers of a conv hybrid (all-attention tiny config)"),
    "lfm2-moe": _f("Lfm2MoeForCausalLM", "attention layers of a conv hybrid, MoE", layer_types=["full_attention"] * 2),
    "llama": _f("LlamaForCausalLM", "GQA, head_dim != hidden/heads"),
    "llama4": _f("Llama4ForCausalLM", "GQA, chunked/NoPE layers, MoE"),
    "mamba": _f("MambaForCausalLM", "Mamba", NONE, _SSM),
    "mamba2": _f("Mamba2ForCausalLM", "Mamba2", NONE, _SSM, num_heads=8, head_dim=16, n_groups=1),
    "minimax-m2": _f("MiniMaxM2ForCausalLM", "GQA, qk-norm, MoE"),
    "ministral3": _f("Ministral3ForCausalLM", "GQA, sliding window"),
    "mistral": _f("MistralForCausalLM", "GQA, sliding window"),
    "mixtral": _f("MixtralForCausalLM", "GQA, sliding window, MoE"),
    "modernbert-decoder": _f("ModernBertDecoderForCausalLM", "global/local (sliding) layers", head_dim=None,
                             local_attention=4, global_attn_every_n_layers=2),
    "mpt": _f("MptForCausalLM", "ALiBi", EAGER, _NO_INTERFACE + " (ALiBi bias)", d_model=64, n_heads=4, n_layers=2),
    "nanochat": _f("NanoChatForCausalLM", "qk-norm"),
    "nemotron": _f("NemotronForCausalLM", "GQA, partial rotary"),
    "nemotron-h": _f("NemotronHForCausalLM", "hybrid Mamba2 + attention", EAGER, _HYBRID),
    "olmo": _f("OlmoForCausalLM", "MHA"),
    "olmo2": _f("Olmo2ForCausalLM", "qk-norm"),
    "olmo3": _f("Olmo3ForCausalLM", "qk-norm, sliding/full layers", layer_types=MIXED),
    "olmo-hybrid": _f("OlmoHybridForCausalLM", "hybrid", EAGER, _HYBRID),
    "olmoe": _f("OlmoeForCausalLM", "qk-norm, MoE", head_dim=16),
    "openai-gpt": _f("OpenAIGPTLMHeadModel", "MHA", EAGER, _NO_INTERFACE),
    "opt": _f("OPTForCausalLM", "MHA, learned positions"),
    "phi": _f("PhiForCausalLM", "partial rotary, parallel attention"),
    "phi3": _f("Phi3ForCausalLM", "GQA, fused qkv, sliding window"),
    "qwen2": _f("Qwen2ForCausalLM", "GQA, qkv bias"),
    "qwen2-moe": _f("Qwen2MoeForCausalLM", "GQA, MoE with shared expert"),
    "qwen3": _f("Qwen3ForCausalLM", "GQA, qk-norm"),
    "qwen3-moe": _f("Qwen3MoeForCausalLM", "GQA, qk-norm, MoE"),
    "qwen3-next": _f("Qwen3NextForCausalLM", "hybrid linear attention", EAGER, _HYBRID),
    "qwen3.5": _f("Qwen3_5ForCausalLM", "hybrid linear attention", EAGER, _HYBRID),
    "qwen3.5-moe": _f("Qwen3_5MoeForCausalLM", "hybrid linear attention, MoE", EAGER, _HYBRID),
    "recurrent-gemma": _f("RecurrentGemmaForCausalLM", "hybrid RG-LRU + local attention", EAGER, _HYBRID),
    "rwkv": _f("RwkvForCausalLM", "RWKV", NONE, _SSM),
    "seed-oss": _f("SeedOssForCausalLM", "GQA"),
    "smollm3": _f("SmolLM3ForCausalLM", "GQA, NoPE layers"),
    "stablelm": _f("StableLmForCausalLM", "partial rotary", EAGER, _NO_INTERFACE),
    "starcoder2": _f("Starcoder2ForCausalLM", "GQA, sliding window"),
    "vaultgemma": _f("VaultGemmaForCausalLM", "GQA, sliding/full layers, logit softcap", layer_types=MIXED),
    "xglm": _f("XGLMForCausalLM", "sinusoidal positions", EAGER, _NO_INTERFACE),
    "youtu": _f("YoutuForCausalLM", "multi-head latent attention", num_key_value_heads=4, head_dim=8),
    "zamba2": _f("Zamba2ForCausalLM", "hybrid Mamba2 + shared attention", EAGER, _HYBRID, layer_types=["mamba", "hybrid"]),
}


def family_config(name: str, **overrides: Any):
    """The tiny config of family ``name``: ``BASE``, the family's overrides and ``overrides``, limited to keys its
    config declares."""
    import transformers

    fam = _family(name)
    cfg_cls = getattr(transformers, fam.cls).config_class
    known = set(vars(cfg_cls()).keys()) | {"layer_types", "head_dim"}
    given = {**fam.overrides, **overrides}
    kw = {k: v for k, v in {**BASE, **given}.items() if v is not None and (k in known or k in given)}
    if "head_dim" not in known and "head_dim" not in fam.overrides:
        kw.pop("head_dim", None)
    return cfg_cls(**kw)


def build_family(name: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A seeded random-init model of family ``name`` in eval mode. Learned sink logits (initialised to 0 by
    transformers) are spread (std 2) so that the sink column carries real mass."""
    import transformers

    fam = _family(name)
    cfg = family_config(name, **overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, fam.cls)(cfg).eval()
    for m in model.modules():
        if isinstance(getattr(m, "sinks", None), torch.nn.Parameter):
            torch.nn.init.normal_(m.sinks, std=2.0)
    return model


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise UnknownNameError(f"unknown family {name!r}; choose one of {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def family_table() -> str:
    """The README's markdown table: one row per family with its status, the reason and the date tested."""
    rows = ["| family | transformers class | layout kept in the tiny test model | status | date tested |",
            "|---|---|---|---|---|"]
    for name, f in sorted(FAMILIES.items()):
        status = f.status if not f.reason else f"{f.status}: {f.reason}"
        rows.append(f"| {name} | `{f.cls}` | {f.layout} | {status} | {TESTED} |")
    n_fused = sum(f.status == FUSED for f in FAMILIES.values())
    n_attn = sum(f.status != NONE for f in FAMILIES.values())
    rows.append("")
    rows.append(f"Fused: {n_fused} of {n_attn} families with attention ({len(FAMILIES)} bridged decoder classes, "
                f"{len(FAMILIES) - n_attn} of them without attention).")
    return "\n".join(rows)


__all__ = ["FAMILIES", "Family", "build_family", "family_config", "family_table", "FUSED", "EAGER", "NONE", "TESTED"]
