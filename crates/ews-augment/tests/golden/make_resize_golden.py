"""Golden outputs of torchvision's ImageNet transforms on PIL images, computed with Pillow.

torchvision (PIL input): RandomResizedCrop = img.crop(window).resize((s, s), BILINEAR)
(Pillow's bilinear filter widens its support when shrinking: antialiased);
Resize(r) = shorter side to r, longer to int(r * long / short), BILINEAR; CenterCrop(c) =
crop at int(round((h - c) / 2)), int(round((w - c) / 2)). The windows are given here, so the
outputs are those of each window.

Run: python3 make_resize_golden.py (Pillow, numpy). Writes resize_golden.json and
resize_golden.bin.gz next to this script.
"""
import gzip, json, os

import numpy as np
from PIL import Image


def pattern(h, w):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    v = (y * 5 + x * 3 + c * 70 + (x * y) // 7) % 256
    return Image.fromarray(v.astype(np.uint8))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    entries, blob = [], bytearray()

    def add(entry, img):
        a = np.asarray(img, dtype=np.uint8)
        entry.update({"height": a.shape[0], "width": a.shape[1], "offset": len(blob)})
        entries.append(entry)
        blob.extend(a.tobytes())

    for (h, w) in [(120, 90), (97, 131)]:
        img = pattern(h, w)
        for (top, left, ch, cw, size) in [(0, 0, h, w, 48), (10, 7, 40, 61, 48),
                                          (h - 30, w - 25, 30, 25, 48), (3, 5, 8, 6, 48),
                                          (1, 2, 2, 1, 48), (0, 0, h, w, 10)]:
            out = img.crop((left, top, left + cw, top + ch)).resize((size, size), Image.BILINEAR)
            add({"kind": "resized_crop", "image": [h, w], "top": top, "left": left,
                 "crop_height": ch, "crop_width": cw, "size": size}, out)
        for (resize, crop) in [(64, 56), (40, 40)]:
            short, long = min(h, w), max(h, w)
            nshort, nlong = resize, int(resize * long / short)
            nw, nh = (nshort, nlong) if w <= h else (nlong, nshort)
            r = img.resize((nw, nh), Image.BILINEAR)
            top = int(round((nh - crop) / 2.0))
            left = int(round((nw - crop) / 2.0))
            add({"kind": "resize_center_crop", "image": [h, w], "resize": resize,
                 "crop": crop}, r.crop((left, top, left + crop, top + crop)))
    with open(os.path.join(here, "resize_golden.json"), "w") as f:
        json.dump({"entries": entries}, f, indent=1)
    with gzip.GzipFile(os.path.join(here, "resize_golden.bin.gz"), "wb", mtime=0) as f:
        f.write(bytes(blob))


if __name__ == "__main__":
    main()
