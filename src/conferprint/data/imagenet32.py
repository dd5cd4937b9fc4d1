"""ImageNet32 (Chrabaszcz et al. 2017), reduced to the 100 classes of the papers' appendix.

Official layout: ``train_data_batch_1`` … ``train_data_batch_10`` and ``val_data``, pickled dicts
with ``'data'`` (N × 3072 uint8, R, G then B planes) and ``'labels'`` (1-based class indices), plus
the ILSVRC ``map_clsloc.txt`` (``wnid index name`` per line) that gives the indices their names.
The batches are pickles by format: they are read only from the folder the user names.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from conferprint.data.base import DataFormatError, Dataset, candidate_dirs, not_found, uint8_to_float

# Lukas et al. (ICLR 2021), Appendix A.2, in the paper's order; this order defines our labels 0..99.
IMAGENET32_SUBSET_100 = [
    "kit fox", "Persian cat", "gazelle", "porcupine", "sea lion", "killer whale", "African elephant", "jaguar",
    "otterhound", "hyena", "sorrel", "dalmatian", "fox squirrel", "tiger", "zebra", "ram", "orangutan",
    "squirrel monkey", "komondor", "guinea pig", "golden retriever", "macaque", "pug", "water buffalo",
    "American black bear", "giant panda", "armadillo", "gibbon", "German shepherd", "koala", "umbrella",
    "soccer ball", "starfish", "grand piano", "laptop", "strawberry", "airliner", "balloon", "space shuttle",
    "aircraft carrier", "tank", "missile", "mountain bike", "steam locomotive", "cab", "snowplow", "bookcase",
    "toilet seat", "pool table", "orange", "lemon", "violin", "sax", "volcano", "coral reef", "lakeside", "hammer",
    "vulture", "hummingbird", "flamingo", "great white shark", "hammerhead", "stingray", "barracouta", "goldfish",
    "American chameleon", "green snake", "European fire salamander", "loudspeaker", "microphone", "digital clock",
    "sunglass", "combination lock", "nail", "altar", "mountain tent", "scoreboard", "mashed potato", "head cabbage",
    "cucumber", "plate", "necklace", "sandal", "ski mask", "teddy", "golf ball", "red wine", "sunscreen",
    "beer glass", "cup", "traffic light", "lipstick", "hotdog", "toilet tissue", "cassette", "lotion", "barrel",
    "basketball", "barbell", "pole",
]
MAP_FILE = "map_clsloc.txt"
HOW = (
    "Download the 32×32 downsampled ImageNet (https://image-net.org/download-images, 'Imagenet32_train' and "
    "'Imagenet32_val', python pickle format), put the batches and the ILSVRC devkit's map_clsloc.txt in one "
    "folder, and pass it with --data-dir or $CONFERPRINT_DATA."
)


def _norm(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def read_class_map(path: Path) -> dict[str, int]:
    """``map_clsloc.txt`` -> {normalised name: 1-based index}. Names used twice in ILSVRC are dropped."""
    out: dict[str, int] = {}
    dup: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 3 or not parts[1].isdigit():
            raise DataFormatError(f"{path}:{n}: expected 'wnid index name', got {line!r}")
        key = _norm(" ".join(parts[2:]))
        if key in out:
            dup.add(key)
        out[key] = int(parts[1])
    return {k: v for k, v in out.items() if k not in dup}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f)  # official format; path chosen by the user
    except Exception as e:  # noqa: BLE001
        raise DataFormatError(f"{path}: not an ImageNet32 batch ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise DataFormatError(f"{path}: missing 'data' or 'labels'")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataFormatError(f"{path}: data shape {data.shape} with {len(labels)} labels, expected (N, 3072)")
    if labels.size and labels.min() < 1:
        raise DataFormatError(f"{path}: labels must be 1-based (found {labels.min()})")
    return data.reshape(-1, 3, 32, 32), labels


def load_imagenet32(
    data_dir: str | os.PathLike | None = None, *, classes: list[str] | None = None, map_file: str | os.PathLike | None = None
) -> Dataset:
    classes = list(classes or IMAGENET32_SUBSET_100)
    looked = candidate_dirs(data_dir, "imagenet32", [])
    root = next((d for d in looked if (d / "val_data").is_file() and (d / "train_data_batch_1").is_file()), None)
    if root is None:
        raise not_found("ImageNet32", looked, HOW)
    mpath = Path(map_file) if map_file is not None else root / MAP_FILE
    if not mpath.is_file():
        raise DataFormatError(f"{mpath}: class map not found; ImageNet32 labels cannot be named without it. {HOW}")
    cmap = read_class_map(mpath)
    missing = [c for c in classes if _norm(c) not in cmap]
    if missing:
        raise DataFormatError(f"{mpath}: no class named {', '.join(repr(m) for m in missing)}")
    lut = np.full(1001, -1, dtype=np.int64)
    for new, c in enumerate(classes):
        lut[cmap[_norm(c)]] = new

    def subset(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            x, y = _read_batch(f)
            if y.max(initial=0) > 1000:
                raise DataFormatError(f"{f}: label {y.max()} outside 1..1000")
            keep = lut[y] >= 0
            xs.append(x[keep])
            ys.append(lut[y[keep]])
        return np.concatenate(xs), np.concatenate(ys)

    train_files = sorted(root.glob("train_data_batch_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    x_tr, y_tr = subset(train_files)
    x_te, y_te = subset([root / "val_data"])
    return Dataset("imagenet32", uint8_to_float(x_tr), torch.from_numpy(y_tr), uint8_to_float(x_te),
                   torch.from_numpy(y_te), classes, str(root))
