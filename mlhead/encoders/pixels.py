"""Any PIL image mode -> the 8-bit RGB picture an image encoder expects: the one conversion every image
path uses (embed, predict, ``mlhead.load(run).predict([pil_image])``), so the same file gives the same pixels
everywhere.

``Image.convert("RGB")`` alone is wrong for two kinds of files:

* 16-bit greyscale (PNG/TIFF; PIL modes ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` and 32-bit ``I``): PIL
  clips the 0..65535 values to 0..255, so almost every pixel becomes white. Here they are scaled to 8 bits,
  ``round(v / 257)`` (65535 -> 255, ``257 k`` -> ``k``); ``I`` is read as 16-bit (the range 16-bit PNGs
  decode to) and clipped to 0..65535 first.
* Transparency (``RGBA``, ``LA``, ``PA``, ``P``/``L``/``RGB`` with a ``transparency`` key): PIL drops the
  alpha channel and shows whatever colour hides under transparent pixels (often black). Here the picture is
  composited onto white, as a viewer shows it on a white page.

Every other mode (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``F``) goes through
``convert("RGB")`` (PIL's own conversion: palette lookup, CMYK -> RGB; Adobe-inverted CMYK JPEGs are
un-inverted by PIL's JPEG decoder).
"""

from __future__ import annotations

import numpy as np

#: Modes holding integers wider than 8 bits (16-bit greyscale and PIL's 32-bit integer mode).
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: Modes with an alpha channel (``PA``, ``La``, ``RGBa`` included: premultiplied or palette).
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: The colour transparent pixels are composited onto.
BACKGROUND = (255, 255, 255)


def wide_to_8bit(img):
    """A 16-bit (or 32-bit ``I``) greyscale PIL image -> mode ``L``: ``round(clip(v, 0, 65535) / 257)``
    as uint8. Exact for a 16-bit image made from an 8-bit one by ``v * 257``."""
    from PIL import Image

    arr = np.asarray(img).astype(np.int64)
    arr8 = (np.clip(arr, 0, 65535) + 128) // 257
    return Image.fromarray(arr8.astype(np.uint8))


def _has_alpha(img) -> bool:
    return img.mode in ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def to_rgb8(img):
    """A PIL image of any mode -> a PIL ``RGB`` image (8 bits per channel), see the module docstring.

    16-bit greyscale is scaled (not clipped) to 8 bits; alpha is composited onto white; other modes use
    PIL's ``convert("RGB")``. An ``RGB`` image is returned as is. Source: Pillow's mode list
    (https://pillow.readthedocs.io/en/stable/handbook/concepts.html#modes)."""
    from PIL import Image

    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in WIDE_MODES:
        return wide_to_8bit(img).convert("RGB")
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        back = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(back, rgba).convert("RGB")
    return img.convert("RGB")
