"""Tiny randomly initialised CLIP, BLIP and BERT models saved in the ``save_pretrained`` layouts that
``bgmgen.weights`` finds, with tokenizers built offline. Used by the feature tests; built once per session."""

from __future__ import annotations

import string
from pathlib import Path

IMAGE_SIZE = 32  # pixels: tiny vision towers (4x4 patches of 8 px)
_BUILT: dict[str, Path] = {}
_WORDS = ["a", "an", "the", "of", "photo", "scene", "red", "blue", "car", "man", "calm", "peaceful", "intense",
          "action", "dark", "gloomy", "bright", "cheerful", "sad", "melancholic", "happy", "joyful"]


def _tiny(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, **extra)


def _wordpiece_vocab() -> dict[str, int]:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + _WORDS + list(string.ascii_lowercase)
    tokens += ["##" + c for c in string.ascii_lowercase] + list(".,'!-")
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def save_clip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    # Byte-level BPE with single characters only: every ASCII word splits into letters, no merges needed.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,'!-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    config = CLIPConfig(
        text_config=_tiny(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=_tiny(image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


def save_blip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

    torch.manual_seed(seed)
    vocab = _wordpiece_vocab()
    config = BlipConfig(
        text_config=_tiny(vocab_size=len(vocab), encoder_hidden_size=32, max_position_embeddings=64,
                          bos_token_id=vocab["[DEC]"], sep_token_id=vocab["[SEP]"], pad_token_id=vocab["[PAD]"]),
        vision_config=_tiny(image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BertTokenizer(vocab=vocab, bos_token="[DEC]").save_pretrained(folder)
    return folder


def save_bert(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    vocab = _wordpiece_vocab()
    BertModel(BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **_tiny())).save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    return folder


def weights_dir(root: Path) -> Path:
    """``root/weights/{clip,blip,bert}``, built once per process (later calls return the first folder)."""
    if "dir" not in _BUILT:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        base = root / "weights"
        save_clip(base / "clip")
        save_blip(base / "blip")
        save_bert(base / "bert")
        _BUILT["dir"] = base
    return _BUILT["dir"]
