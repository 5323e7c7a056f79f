"""Image loading with errors that name the file, and folder listings."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from zoo.errors import DatasetError, InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image fully (decoding every pixel now, so a truncated file fails here).

    Raises:
        DatasetError: the file does not exist.
        InputError: the file is not a decodable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"corrupt or unreadable image: {path} ({err})") from err


def list_images(folder: str | Path) -> list[Path]:
    """Images directly inside ``folder`` and its subfolders, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return images
