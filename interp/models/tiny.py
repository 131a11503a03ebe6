"""Seeded random-init models for tests: Llama-style (GQA), GPT-2-style and BERT-style.

They use an offline byte-level tokenizer (every string tokenizes, vocabulary 259), so tests need no
download and no bundled model.
"""
from __future__ import annotations

from typing import Any

import torch

from interp.errors import UnknownNameError

_SPECIALS = ["<pad>", "<bos>", "<eos>"]


def byte_tokenizer():
    """A byte-level BPE with no merges: 3 specials + 256 bytes. Prepends ``<bos>``.

    Saved once under the cache and reloaded from there, because the bridge re-opens tokenizers by path."""
    from transformers import AutoTokenizer

    from interp.models.bundled import cache_dir
    from interp.io import atomic_dir

    path = cache_dir() / "byte-tokenizer"
    if not (path / "tokenizer.json").exists():
        with atomic_dir(path) as tmp:
            _build_byte_tokenizer().save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(path)


def _build_byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(_SPECIALS)}
    vocab.update({ch: i + len(_SPECIALS) for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", padding_side="right"
    )


def _llama(**o: Any):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(vocab_size=259, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
               num_key_value_heads=2, head_dim=8, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
               pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(LlamaConfig(**{**cfg, **o})), byte_tokenizer()


def _gpt2(**o: Any):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = dict(vocab_size=259, n_embd=48, n_layer=2, n_head=6, n_positions=2048, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(GPT2Config(**{**cfg, **o})), byte_tokenizer()


def _bert(**o: Any):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from interp.models.bundled import minilm_dir

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=6, max_position_embeddings=512)
    return BertForMaskedLM(BertConfig(**{**cfg, **o})), tok


def _llava(**o: Any):
    """A LlavaForConditionalGeneration: CLIP vision tower (64×64 images, patch 16 → 16 image tokens, CLS dropped),
    LLaVA projector, Llama text model (GQA 6/2, 4 layers). The image token is byte id 3."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=16)
    text = dict(vocab_size=259, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=6,
                num_key_value_heads=2, head_dim=8, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                pad_token_id=0, tie_word_embeddings=False)
    text.update({k: v for k, v in o.items() if k != "vision"})
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**{**vision, **o.get("vision", {})}), text_config=LlamaConfig(**text),
                      image_token_id=3, vision_feature_select_strategy="default", vision_feature_layer=-1,
                      image_seq_length=16)
    cfg.architectures = ["LlavaForConditionalGeneration"]
    return LlavaForConditionalGeneration(cfg), byte_tokenizer()


TINY_ARCHS = {"llama": _llama, "gpt2": _gpt2, "bert": _bert, "llava": _llava}


def build_tiny(arch: str, seed: int, **overrides: Any):
    if arch not in TINY_ARCHS:
        raise UnknownNameError(f"unknown tiny architecture {arch!r}; choose one of {sorted(TINY_ARCHS)}")
    torch.manual_seed(seed)
    model, tok = TINY_ARCHS[arch](**overrides)
    return model.eval(), tok
