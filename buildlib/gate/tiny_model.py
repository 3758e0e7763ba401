"""A tiny random-weight Llama model for the chat smoke, made here: no
download, and the same bytes on every run and machine.

What mistral.rs reads from a local model directory (read at v0.9.2:
mistralrs-core/src/models/llama.rs `Config` for config.json's keys and the
tensor names, mistralrs-core/src/pipeline/macros.rs for the files it looks
for, mistralrs-core/src/pipeline/chat_template.rs for tokenizer_config.json):

- config.json: a LlamaForCausalLM config (the loader is chosen from
  `architectures`);
- tokenizer.json: a Hugging Face tokenizers file; here a byte-level BPE
  without merges, so any text encodes (one token per byte) and decodes;
- tokenizer_config.json: the chat template /v1/chat/completions renders,
  and the bos/eos tokens it names;
- generation_config.json: bos and eos ids;
- model.safetensors: the weights, BF16, written by hand (the format is an
  8-byte little-endian header length, a JSON header, then the raw data).

The weights come from SHAKE-256 keyed by a fixed seed and the tensor's
name: each byte is a signed integer n and the weight n * 2**-11, which BF16
holds exactly, so no floating-point rounding can differ between machines.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

SEED = "mistralrs-rpm tiny model 1"

# Attention head size 64: the smallest that mistral.rs's paged-attention
# kernels take (mistralrs-paged-attn/src/cuda/pagedattention.cuh: `case 64`
# is the first size); two heads make hidden size 128.
HIDDEN = 128
HEADS = 2
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 256
LAYERS = 2
MAX_POSITIONS = 2048

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<pad>", "<|reserved|>")
UNK, BOS, EOS = SPECIAL_TOKENS[:3]
VOCAB = len(SPECIAL_TOKENS) + 256
"""The special tokens, then one token per byte (ids from len(SPECIAL_TOKENS))."""

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def config() -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "vocab_size": VOCAB,
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "torch_dtype": "bfloat16",
    }


def tensor_shapes(cfg: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor a Llama model has, by name, with its shape (out, in)
    as transformers and mistral.rs name and lay them out."""
    cfg = cfg or config()
    hidden, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (cfg["num_attention_heads"] * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.weight": (kv, hidden),
            p + "self_attn.o_proj.weight": (hidden, cfg["num_attention_heads"] * head_dim),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
    return dict(sorted(shapes.items()))


def _bf16(value: float) -> bytes:
    """value's BF16 bytes, little-endian: the upper half of its float32
    (exact for the values used here)."""
    return struct.pack("<f", value)[2:]


# n * 2**-11 for every signed byte n, as BF16
_WEIGHT = [_bf16((b - 256 if b > 127 else b) / 2048) for b in range(256)]
_ONE = _bf16(1.0)


def tensor_data(name: str, shape: tuple[int, ...]) -> bytes:
    count = 1
    for n in shape:
        count *= n
    if name.endswith("norm.weight"):
        return _ONE * count  # RMSNorm scales start at 1, as in a fresh model
    stream = hashlib.shake_256(f"{SEED}\0{name}".encode()).digest(count)
    return b"".join(_WEIGHT[b] for b in stream)


def safetensors_bytes(shapes: dict[str, tuple[int, ...]]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    chunks, offset = [], 0
    for name, shape in shapes.items():
        data = tensor_data(name, shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the safetensors library writes it
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def byte_symbols() -> list[str]:
    """The printable character byte-level BPE writes for each byte 0..255
    (bytes that print stand for themselves, the others map to 256 + k)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tokenizer() -> dict:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab |= {sym: len(SPECIAL_TOKENS) + b for b, sym in enumerate(byte_symbols())}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, tok in enumerate(SPECIAL_TOKENS)],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def tokenizer_config() -> dict:
    return {
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": "<pad>",
        "add_bos_token": False,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def generation_config() -> dict:
    return {"bos_token_id": SPECIAL_TOKENS.index(BOS), "eos_token_id": SPECIAL_TOKENS.index(EOS)}


def _json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def model_files() -> dict[str, bytes]:
    """Each file of the model directory, by name, as bytes."""
    cfg = config()
    return {
        "config.json": _json(cfg),
        "generation_config.json": _json(generation_config()),
        "model.safetensors": safetensors_bytes(tensor_shapes(cfg)),
        "tokenizer.json": _json(tokenizer()),
        "tokenizer_config.json": _json(tokenizer_config()),
    }


def write_model(directory: Path) -> Path:
    """Write the model into directory (made if missing; the files are
    replaced) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in model_files().items():
        (directory / name).write_bytes(data)
    return directory
