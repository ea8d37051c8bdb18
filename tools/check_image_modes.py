"""Real-image check of issue #16 item 6: a 16-bit greyscale PNG of a real poster must embed like its 8-bit
version, not like a blank white image.

For N movie posters: grey = poster.convert("L"); a 16-bit PNG holding grey * 257; the embeddings (a real
pretrained backbone) of (a) the 8-bit grey poster, (b) the 16-bit PNG read through mlhead's reader
(:func:`mlhead.encoders.pixels.to_rgb8`), (c) the 16-bit PNG read as before (PIL ``convert("RGB")``:
values clipped to 255), (d) a white image. Prints mean/min cosines.

    python tools/check_image_modes.py --posters ../shared/data/movieposters/MoviePosters \
        --weights ../shared/weights/mobilenetv2_100 -n 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _cos(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posters", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--backbone", default="mobilenetv2_100")
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()

    from mlhead.encoders import create_encoder

    enc = create_encoder(args.backbone, weights=args.weights)
    read = enc.read

    def old_read(img):  # the reader before issue #16: PIL's convert("RGB") clips 16-bit values
        img.load()
        return enc.uint8_transform(img.convert("RGB"))

    files = sorted(args.posters.glob("*.jpg"))[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        rows, mode = {"grey8": [], "new16": [], "old16": [], "white": []}, "?"
        for i, f in enumerate(files):
            grey = np.asarray(Image.open(f).convert("L"))
            p8, p16 = Path(tmp) / f"{i}_8.png", Path(tmp) / f"{i}_16.png"
            Image.fromarray(grey).save(p8)
            Image.fromarray(grey.astype(np.uint16) * 257).save(p16)
            rows["grey8"].append(read(p8))
            rows["new16"].append(read(p16))
            with Image.open(p16) as im:
                mode = im.mode
                rows["old16"].append(old_read(im))
            rows["white"].append(read(Image.new("RGB", Image.open(f).size, (255, 255, 255))))
    emb = {k: enc.encode(torch.stack(v)) for k, v in rows.items()}
    print(f"{len(files)} posters, {args.backbone} ({enc.dim}-d), 16-bit PNG opens as PIL mode {mode}")
    for a, b in (("new16", "grey8"), ("new16", "white"), ("old16", "white"), ("old16", "grey8"), ("grey8", "white")):
        c = _cos(emb[a], emb[b])
        print(f"cosine {a:>5} vs {b:<5}: mean {c.mean():.4f}  min {c.min():.4f}  max {c.max():.4f}")
    px = {k: torch.stack(v).float() for k, v in rows.items()}
    print(f"mean pixel: grey8 {px['grey8'].mean():.1f}, new16 {px['new16'].mean():.1f}, "
          f"old16 {px['old16'].mean():.1f}, white {px['white'].mean():.1f}")


if __name__ == "__main__":
    main()
