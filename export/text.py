"""Offline text side of the token router: CLIP text embeddings of object descriptions, saved as .npz
for the torch-free runtime (`fastsam2.runtime.text_embeddings`), and automatic descriptions of a
prompted object from a shipped vocabulary.

Never touches the network: open_clip models are built with random weights or from a LOCAL checkpoint
file; the BPE vocabulary ships inside open_clip.
"""

from __future__ import annotations

import argparse
import os
import sys
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastsam2.runtime.text_embeddings import RANDOM_WEIGHTS_ID, load_vocabulary
from fastsam2.runtime.errors import UserError

DEFAULT_CLIP = "ViT-B-32"
PROMPT_TEMPLATE = "a photo of a {}."
BOX_EXPANSION = 0.10  # the crop grows by 10% of the box size (5% per side) to keep some context
RANDOM_SEED = 0  # random-init weights are seeded so "random-init" files are at least reproducible
NO_WEIGHTS_MESSAGE = (
    "no CLIP weights given: using the text-free router "
    "(pass --clip-pretrained PATH to enable automatic descriptions)"
)
_RANDOM_WARNING = (
    "\n" + "!" * 78 + "\n"
    "WARNING: no --pretrained CLIP checkpoint given: the CLIP model has RANDOM weights.\n"
    "The text embeddings are MEANINGLESS (fine for tests and plumbing, useless for routing).\n"
    + "!" * 78 + "\n"
)


class TextExportError(UserError, ValueError):
    """A user error (bad path, unknown model, bad texts): reported as one line by the CLI."""


# ---------------------------------------------------------------------------------------- CLIP


def weights_id(path: str | os.PathLike) -> str:
    """First 16 hex chars of the checkpoint's sha256."""
    from fastsam2.runtime.manifest import file_sha256

    return file_sha256(path)[:16]


def _is_torchscript_archive(path: str) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") for name in zf.namelist())


def load_clip(
    model_name: str = DEFAULT_CLIP,
    pretrained: str | os.PathLike | None = None,
    device: str = "cpu",
) -> tuple[Any, Any, Any]:
    """Build an open_clip model offline -> (model, tokenizer, preprocess).

    `pretrained` is a local checkpoint file (.pt/.pth/.bin/.safetensors in open_clip or OpenAI format)
    or None for seeded random weights (a loud warning goes to stderr). `model.fastsam2_weights_id` is
    set to the file's sha256 prefix or "random-init".
    """
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
        if not os.path.isfile(pretrained):
            raise TextExportError(f"CLIP checkpoint not found: {pretrained}")
    try:
        import open_clip
        import torch
    except ImportError as exc:
        raise TextExportError(f"{exc.name} is not installed: pip install 'fastsam2[text]'") from None
    if model_name not in open_clip.list_models():
        raise TextExportError(
            f"unknown open_clip model {model_name!r} (see open_clip.list_models(); default {DEFAULT_CLIP})"
        )
    text_cfg = open_clip.get_model_config(model_name).get("text_cfg", {})
    hf_names = [text_cfg[k] for k in ("hf_model_name", "hf_tokenizer_name") if text_cfg.get(k)]
    if hf_names:
        # Those need HuggingFace downloads (tokenizer and/or text tower) that an offline box cannot do.
        raise TextExportError(
            f"open_clip model {model_name!r} needs HuggingFace files {hf_names}; use a model with the "
            f"built-in BPE tokenizer such as {DEFAULT_CLIP}"
        )

    # OpenAI's own checkpoints are TorchScript archives (torch.load(weights_only=True) refuses them)
    # and their models use QuickGELU, which open_clip's "ViT-B-32" config does not.
    openai_jit = pretrained is not None and _is_torchscript_archive(pretrained)

    import logging

    # open_clip logs "no pretrained weights" on every pretrained=None build; we load files ourselves
    # (a tag like "openai" would make open_clip download), so that message is noise.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None, device=device, force_quick_gelu=openai_jit
            )
    finally:
        logging.disable(previous)

    if pretrained is None:
        print(_RANDOM_WARNING, file=sys.stderr, end="")
        wid = RANDOM_WEIGHTS_ID
    else:
        try:
            if openai_jit:
                state = torch.jit.load(pretrained, map_location="cpu").state_dict()
                for key in ("input_resolution", "context_length", "vocab_size"):
                    state.pop(key, None)
                model.load_state_dict(state)
            else:
                open_clip.load_checkpoint(model, pretrained, device=device)
        except Exception as exc:  # torch/safetensors raise many types for a bad file; one line is enough
            lines = str(exc).strip().splitlines()
            reason = lines[0] if lines else type(exc).__name__
            raise TextExportError(f"cannot load CLIP checkpoint {pretrained} into {model_name}: {reason}") from None
        wid = weights_id(pretrained)
    model.eval()
    model.fastsam2_weights_id = wid
    model.fastsam2_model_name = model_name
    tokenizer = open_clip.get_tokenizer(model_name)
    return model, tokenizer, preprocess


def encode_texts(texts: Sequence[str], model: Any, tokenizer: Any, batch_size: int = 256) -> np.ndarray:
    """CLIP text embeddings [N, D] float32, rows L2-normalized."""
    import torch

    texts = list(texts)
    if not texts:
        raise TextExportError("no texts to encode")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise TextExportError(f"texts must be non-empty strings, got {t!r}")
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(texts[start : start + batch_size]).to(device)
            emb = model.encode_text(tokens).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def _encode_image(image: np.ndarray, model: Any, preprocess: Any) -> np.ndarray:
    """CLIP image embedding [D] float32, L2-normalized, of an HxWx3 uint8 RGB array."""
    import torch
    from PIL import Image

    device = next(model.parameters()).device
    pixels = preprocess(Image.fromarray(image)).unsqueeze(0).to(device)
    with torch.inference_mode():
        emb = model.encode_image(pixels).float()
    return torch.nn.functional.normalize(emb, dim=-1)[0].cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------------ .npz file


def save_text_embeddings(
    path: str | os.PathLike,
    texts: Sequence[str],
    embeddings: np.ndarray,
    model_name: str,
    weights_id: str,
) -> None:
    """Write texts [N] + embeddings [N, D] float32 + metadata to `path` (.npz) atomically."""
    import tempfile

    path = os.fspath(path)
    texts = list(texts)
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise TextExportError(f"expected embeddings [{len(texts)}, D] for {len(texts)} texts, got {emb.shape}")
    if len(set(texts)) != len(texts):
        dups = sorted({t for t in texts if texts.count(t) > 1})
        raise TextExportError(f"duplicate texts: {dups}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise TextExportError(f"output folder does not exist: {parent}")

    arrays = {
        "texts": np.array(texts, dtype=np.str_),
        "embeddings": np.ascontiguousarray(emb, dtype=np.float32),
        "clip_model": np.array(model_name, dtype=np.str_),
        "weights": np.array(weights_id, dtype=np.str_),
        "dim": np.array(emb.shape[1], dtype=np.int64),
    }
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------ automatic description

# model -> {vocabulary tuple: prompt embeddings [V, D]}; weak so a dropped model frees its cache.
_VOCAB_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], np.ndarray]] = weakref.WeakKeyDictionary()


def _vocabulary_embeddings(vocabulary: Sequence[str], model: Any, tokenizer: Any) -> np.ndarray:
    per_model = _VOCAB_CACHE.setdefault(model, {})
    key = tuple(vocabulary)
    if key not in per_model:
        per_model[key] = encode_texts([PROMPT_TEMPLATE.format(n) for n in key], model, tokenizer)
    return per_model[key]


def crop_box(
    image: np.ndarray, box: tuple[float, float, float, float] | None, expand: float = BOX_EXPANSION
) -> np.ndarray:
    """Crop [h, w, 3] of `image` [H, W, 3] around box (x0, y0, x1, y1) in pixels, grown by `expand`
    of its size (half per side) and clamped to the image; None -> the whole image."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.dtype} {image.shape}")
    H, W = image.shape[:2]
    if box is None:
        return image
    if len(box) != 4 or not all(np.isfinite(v) for v in box):
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box must have x1 > x0 and y1 > y0, got {box}")
    dx, dy = (x1 - x0) * expand / 2, (y1 - y0) * expand / 2
    cx0, cy0 = max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy)))
    cx1, cy1 = min(W, int(np.ceil(x1 + dx))), min(H, int(np.ceil(y1 + dy)))
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"box {box} lies outside the {W}x{H} image")
    return image[cy0:cy1, cx0:cx1]


def auto_describe(
    image: np.ndarray,
    box: tuple[float, float, float, float] | None,
    model: Any,
    preprocess: Any,
    tokenizer: Any,
    vocabulary: Sequence[str] | None = None,
    top_k: int = 5,
) -> list[tuple[str, float]]:
    """Best vocabulary names for the object in `box` of `image` [H, W, 3] uint8, as (name, cosine)
    sorted by decreasing cosine between the crop's CLIP embedding and "a photo of a {name}."."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    vocab = load_vocabulary() if vocabulary is None else list(dict.fromkeys(vocabulary))
    if not vocab:
        raise ValueError("vocabulary is empty")
    crop = crop_box(image, box)
    image_emb = _encode_image(crop, model, preprocess)
    text_embs = _vocabulary_embeddings(vocab, model, tokenizer)
    sims = text_embs @ image_emb
    order = np.argsort(-sims, kind="stable")[: min(top_k, len(vocab))]
    return [(vocab[i], float(sims[i])) for i in order]


_CLIP_CACHE: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}


def describe_or_none(
    image: np.ndarray,
    box: tuple[float, float, float, float] | None,
    pretrained: str | os.PathLike | None,
    model_name: str = DEFAULT_CLIP,
    vocabulary: Sequence[str] | None = None,
    top_k: int = 5,
    device: str = "cpu",
) -> list[tuple[str, float]] | None:
    """auto_describe with CLIP loaded (once per process) from `pretrained`; None (and one message on
    stderr) when no weights are given, since random-weight descriptions would be noise."""
    if pretrained is None:
        print(NO_WEIGHTS_MESSAGE, file=sys.stderr)
        return None
    key = (model_name, os.path.abspath(os.fspath(pretrained)), device)
    if key not in _CLIP_CACHE:
        _CLIP_CACHE[key] = load_clip(model_name, pretrained, device)
    model, tokenizer, preprocess = _CLIP_CACHE[key]
    return auto_describe(image, box, model, preprocess, tokenizer, vocabulary, top_k)


# ------------------------------------------------------------------------------------------ CLI


def add_text_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `text`: fastsam2-export text "red car" "person" --clip ViT-B-32 --pretrained PATH -o texts.npz"""
    p = subparsers.add_parser(
        "text",
        help="encode object descriptions with CLIP into a text-embedding .npz",
        description="Encode object descriptions with a CLIP text encoder (offline) for the token router.",
    )
    p.add_argument("texts", nargs="+", metavar="TEXT", help='object descriptions, e.g. "red car"')
    p.add_argument("--clip", default=DEFAULT_CLIP, help=f"open_clip model name (default {DEFAULT_CLIP})")
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="PATH",
        help="local CLIP checkpoint file; omitted -> RANDOM weights (meaningless embeddings, for tests)",
    )
    p.add_argument("-o", "--output", required=True, metavar="NPZ", help="output .npz path")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run_text)
    return p


def run_text(args: argparse.Namespace) -> int:
    """Run the `text` subcommand (a TextExportError is the CLI's one-line user error)."""
    from fastsam2.runtime.outdir import check_output_file

    check_output_file(args.output, protect=[args.pretrained])
    model, tokenizer, _ = load_clip(args.clip, args.pretrained, args.device)
    embeddings = encode_texts(args.texts, model, tokenizer)
    save_text_embeddings(args.output, args.texts, embeddings, args.clip, model.fastsam2_weights_id)
    print(
        f"wrote {len(args.texts)} text embeddings [{embeddings.shape[0]}, {embeddings.shape[1]}] "
        f"({args.clip}, weights {model.fastsam2_weights_id}) to {args.output}"
    )
    return 0


def add_describe_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `describe`: fastsam2-export describe FRAME.jpg --box X0,Y0,X1,Y1 --pretrained PATH"""
    p = subparsers.add_parser(
        "describe",
        help="name the object in a box with CLIP (candidate --text values for the router)",
        description="Rank vocabulary names for the object in a box of an image by CLIP similarity.",
    )
    p.add_argument("image", help="an image file (e.g. the first frame of the video)")
    p.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1", help="the object's box (default: the whole image)")
    p.add_argument("--clip", default=DEFAULT_CLIP, help=f"open_clip model name (default {DEFAULT_CLIP})")
    p.add_argument("--pretrained", required=True, metavar="PATH", help="local CLIP checkpoint file")
    p.add_argument("--top-k", type=int, default=5, help="names to print (default 5)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run_describe)
    return p


def run_describe(args: argparse.Namespace) -> int:
    """Print the best vocabulary names (``auto_describe``), one per line with their cosine."""
    from fastsam2.runtime.frames import read_image

    box = None
    if args.box is not None:
        try:
            box = tuple(float(v) for v in args.box.split(","))
        except ValueError:
            raise TextExportError(f"--box takes X0,Y0,X1,Y1, got {args.box!r}") from None
    image = read_image(args.image)
    try:
        names = describe_or_none(image, box, args.pretrained, args.clip, top_k=args.top_k, device=args.device)
    except ValueError as e:
        raise TextExportError(str(e)) from None
    for name, cosine in names or []:
        print(f"{cosine:.3f}  {name}")
    return 0
