"""Image lists: a folder, an image file, or a .txt file that lists images."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".ppm")


def list_images(spec: str | Path) -> list[Path]:
    """Resolve an image set to a sorted list of image paths.

    Args:
        spec: a folder (its image files, sorted by name; files ending in
            ``_overlay.png`` or ``_mask.png`` are skipped), a single image file, or a
            ``.txt`` file with one path per line (relative to the list's folder;
            blank lines and ``#`` comments ignored).

    Raises:
        FileNotFoundError: the spec or a listed file does not exist.
        ValueError: the set is empty.
    """
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"image set not found: {path}")
    if path.is_dir():
        out = sorted(
            p
            for p in path.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(("_overlay", "_mask"))
        )
    elif path.suffix.lower() == ".txt":
        lines = (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines())
        out = [(path.parent / ln).resolve() for ln in lines if ln]
        missing = [str(p) for p in out if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lists missing image(s): {missing[:3]}")
    else:
        out = [path]
    if not out:
        raise ValueError(f"no images in {path}")
    return out
