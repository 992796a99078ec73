"""Classifying images with an exported model: read them safely, rank the classes, write the answer."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import StudyError, reason

IMAGE_SIDE = 32  # every model here reads 32x32 RGB, as the datasets are stored


# Images larger than this are refused before they are decoded (a 12000x12000 PNG of 1 MB would
# take 1.4 GB): 100 megapixels is above a phone camera's photo.
MAX_IMAGE_PIXELS = 100_000_000


IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # raster formats Pillow decodes itself


def read_images(paths: Sequence[str]) -> torch.Tensor:
    """Image files -> uint8 (N, 3, 32, 32), resized as the imagefolder dataset resizes them.

    Only the raster formats of IMAGE_FORMATS are opened (so an EPS never reaches Ghostscript),
    and an image of more than MAX_IMAGE_PIXELS is refused before it is decoded.
    """
    from torchvision.transforms.functional import pil_to_tensor

    images = []
    for path in paths:
        images.append(pil_to_tensor(read_image(path)))
    return torch.stack(images)


def read_image(path: str) -> Any:
    """One image file as a 32x32 RGB PIL image; a file of another format, or too large, is a StudyError."""
    import re
    import warnings

    from PIL import Image, UnidentifiedImageError

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's own check, at open and at decode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning is a refusal too
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:  # header only: nothing decoded yet
                    raise Image.DecompressionBombError(f"Image size ({width * height} pixels)")
                return image.convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE), Image.BILINEAR)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's wording, and ours above
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise StudyError(f"{path}: image too large ({size}; at most {MAX_IMAGE_PIXELS:,} are read)") from None
    except UnidentifiedImageError:
        raise StudyError(f"{path}: not an image in a format read here ({', '.join(IMAGE_FORMATS)})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise StudyError(f"{path}: unreadable image ({reason(exc)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@torch.no_grad()
def classify(model: nn.Module, info: dict[str, Any], images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities (N, classes) for uint8 images (N, 3, 32, 32), normalised as in training."""
    from study.data.loader import BatchLoader

    device = next(model.parameters()).device
    labels = torch.zeros(len(images), dtype=torch.long, device=device)  # unused: the loader wants some
    loader = BatchLoader(images.to(device), labels, batch_size, tuple(info["mean"]), tuple(info["std"]))
    return torch.cat([F.softmax(model(x).float(), dim=1) for x, _ in loader])


def top_classes(probs: torch.Tensor, classes: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Each image's `k` most probable classes, best first, as (class, probability)."""
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [(classes[i], p) for p, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def write_predictions(out: TextIO, paths: Sequence[str], ranked: list[list[tuple[str, float]]], fmt: str) -> None:
    """text: a line per image; json: a list of {path, top: [{class, probability}]}; csv: a row per image."""
    if fmt == "json":
        rows = [
            {"path": path, "top": [{"class": c, "probability": p} for c, p in classes]}
            for path, classes in zip(paths, ranked, strict=True)
        ]
        out.write(json.dumps(rows, indent=2) + "\n")
    elif fmt == "csv":  # path, then class and probability for each rank
        writer = csv.writer(out, lineterminator="\n")
        k = len(ranked[0])
        writer.writerow(["path", *[f"{what}_{r}" for r in range(1, k + 1) for what in ("class", "probability")]])
        for path, classes in zip(paths, ranked, strict=True):
            writer.writerow([path, *[v for c, p in classes for v in (c, f"{p:.6f}")]])
    else:
        for path, classes in zip(paths, ranked, strict=True):
            out.write(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in classes) + "\n")
