"""Feature extraction benchmark: what CLIP ViT-B/32, BLIP-base captions and MiniLM cost on a minute of video.

No real CLIP or BLIP weights are on this machine, and the cost of a forward pass does not depend on the
weights' values, so the models are full-size ones built from transformers' default configs
(``CLIPConfig()`` is ViT-B/32 at 224 px, ``BlipConfig()`` is BLIP-base at 384 px) with random weights,
saved with ``save_pretrained`` into a temporary ``--weights-dir`` layout and loaded by bgmgen's own code.
One caveat: random BLIP never emits its end token, so every caption runs the full ``MAX_CAPTION_TOKENS``
(a real model stops after ~10 words): the caption numbers are an upper bound. MiniLM uses its real weights.

Makes the same 60 s 1280x720 clip with five cuts as ``end_to_end.py`` and times, with ``--repeat N``
medians: model loads, the whole ``extract_features`` pass, and its parts timed alone (decode at 384 px
short side and 2 fps, CLIP on every sampled frame, BLIP on the key frames, MiniLM on the captions).

    python benchmarks/features.py [--duration 60] [--repeat 1] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # run from a checkout without installing

from end_to_end import make_clip  # noqa: E402  the end-to-end benchmark's clip, so numbers compare


def build_models(root: Path) -> Path:
    """Full-size random CLIP ViT-B/32 and BLIP-base in ``root/{clip,blip}`` with offline tokenizers."""
    import torch
    from transformers import (
        AutoTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        CLIPConfig,
        CLIPModel,
        CLIPTokenizer,
    )

    from bgmgen.weights import require

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}  # single characters: prompts tokenise to ~25 ids
    for c in string.ascii_lowercase + string.digits + ".,'!-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    CLIPModel(CLIPConfig()).save_pretrained(root / "clip")
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(root / "clip")
    BlipForConditionalGeneration(BlipConfig()).save_pretrained(root / "blip")
    bert_tokenizer = AutoTokenizer.from_pretrained(require("bert"))  # bert-base-uncased's vocabulary, as BLIP's
    bert_tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    bert_tokenizer.save_pretrained(root / "blip")
    return root


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    from bgmgen.video import features
    from bgmgen.video.captions import Captioner, key_frame_times
    from bgmgen.video.clip_features import load_clip
    from bgmgen.video.decode import iter_frames, probe
    from bgmgen.video.text_features import load_encoder

    torch.set_num_threads(args.threads)
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bgmgen-bench-") as tmp:
        tmp = Path(tmp)
        clip_path = tmp / "clip.mp4"
        cuts = make_clip(clip_path, args.duration)
        build_models(tmp / "weights")
        info = probe(clip_path)
        for _ in range(args.repeat):
            models = features.FeatureModels()
            rows.setdefault("CLIP load", []).append(timed(lambda: load_clip(tmp / "weights" / "clip", args.device))[0])
            rows.setdefault("BLIP load", []).append(timed(lambda: Captioner(tmp / "weights" / "blip", args.device))[0])
            rows.setdefault("MiniLM load", []).append(timed(lambda: load_encoder(device=args.device))[0])
            options = features.FeatureOptions(weights_dir=tmp / "weights", device=args.device, models=models)
            timed(lambda: features.extract_features(info, cuts, options))  # loads the models into ``models``
            seconds, result = timed(lambda: features.extract_features(info, cuts, options))
            rows.setdefault("extract_features (loads cached)", []).append(seconds)
            size = features._decode_size(info, 384)
            seconds, frames = timed(lambda: np.concatenate(list(iter_frames(info, fps=features.FEATURE_FPS, size=size))))
            rows.setdefault(f"  decode {size[0]}x{size[1]} @ {features.FEATURE_FPS:g} fps (alone)", []).append(seconds)
            clip = models.get("clip", tmp / "weights" / "clip", args.device, "transformers")
            seconds, _ = timed(lambda: clip.encode_images(frames))
            rows.setdefault(f"  CLIP on {len(frames)} frames (alone)", []).append(seconds)
            keys = frames[[min(int(round(t * features.FEATURE_FPS)), len(frames) - 1) for t in key_frame_times(cuts, info.duration)]]
            blip = models.get("blip", tmp / "weights" / "blip", args.device)
            seconds, captions = timed(lambda: blip.caption(keys))
            rows.setdefault(f"  BLIP on {len(keys)} key frames (alone)", []).append(seconds)
            bert = load_encoder(device=args.device)
            seconds, _ = timed(lambda: bert.encode(captions))
            rows.setdefault(f"  MiniLM on {len(captions)} captions (alone)", []).append(seconds)
    print(f"| Step ({args.duration:g} s clip, {args.device}, {args.threads} threads) | Seconds (median of {args.repeat}) |")
    print("|---|---:|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")
    print(f"\nanalysers: {', '.join(result.analysers)}; CLIP frames/s: "
          f"{len(frames) / statistics.median(next(v for k, v in rows.items() if k.startswith('  CLIP'))):.1f}")


if __name__ == "__main__":
    main()
