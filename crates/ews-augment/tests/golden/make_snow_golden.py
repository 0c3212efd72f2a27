"""Golden frames of ImageNet-P's snow sequence by the reference formulas
(hendrycks/robustness ImageNet-P/create_p/make_imagenet_p.py, "Snow Code"), with the random
snow layer replaced by a fixed one that Rust computes alike:
layer[y, x] = ((7 x + 13 y + (x y) mod 11) mod 97) / 97 * 0.9 - 0.3. Everything after the
draw is the reference's: scipy's zoom (clipped_zoom, 3x), clearing below 0.5, the uint8 layer
through PNG, ImageMagick's motion blur (Wand) with radius 14, sigma 4 at 4 i - 150 degrees,
OpenCV's float32 RGB2GRAY, the 180-degree turn. Input: the pattern of
make_perturb_golden.py after CenterCrop(224). Stored: frames 0, 13 and 30, the centre
96 x 96 and the top-left 32 x 32.

    pip install numpy scipy pillow scikit-image opencv-python-headless Wand torch torchvision
    apt-get install imagemagick
    python3 crates/ews-augment/tests/golden/make_snow_golden.py
"""

import gzip
import json
import os
from io import BytesIO

import cv2
import numpy as np
from PIL import Image
from wand.image import Image as WandImage

from make_corrupt_golden import clipped_zoom
from make_perturb_golden import center_crop, pattern, wandlibrary


def fixed_layer():
    y, x = np.meshgrid(np.arange(224), np.arange(224), indexing="ij")
    return ((7 * x + 13 * y + (x * y) % 11) % 97) / 97 * 0.9 - 0.3


def snow_frames(x, layer, wanted):
    x = np.array(x) / 255.
    snow_layer = clipped_zoom(layer[..., np.newaxis], 3)
    snow_layer[snow_layer < 0.5] = 0
    snow_layer = Image.fromarray((np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8), mode="L")
    output = BytesIO()
    snow_layer.save(output, format="PNG")
    output = output.getvalue()
    frames = {}
    for i in wanted:
        moving_snow = WandImage(blob=output)
        wandlibrary.MagickMotionBlurImage(moving_snow.wand, 14, 4, i * 4 - 150)
        blurred = cv2.imdecode(np.frombuffer(moving_snow.make_blob(), np.uint8),
                               cv2.IMREAD_UNCHANGED) / 255.
        blurred = blurred[..., np.newaxis]
        z = 0.85 * x + (1 - 0.85) * np.maximum(
            x, cv2.cvtColor(np.float32(x), cv2.COLOR_RGB2GRAY).reshape(224, 224, 1) * 1.5 + 0.5)
        frames[i] = np.uint8(np.clip(z + blurred + np.rot90(blurred, k=2), 0, 1) * 255)
    return frames


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    x = center_crop(Image.fromarray(pattern()))
    entries, blob = [], bytearray()
    for frame, rgb in snow_frames(x, fixed_layer(), [0, 13, 30]).items():
        for part, window in [("centre", rgb[64:160, 64:160]), ("corner", rgb[:32, :32])]:
            window = np.ascontiguousarray(window)
            entries.append({"perturbation": "snow", "frame": frame, "part": part,
                            "height": window.shape[0], "width": window.shape[1],
                            "offset": len(blob)})
            blob.extend(window.tobytes())
    with open(os.path.join(here, "snow_golden.json"), "w") as f:
        json.dump({"layer": "((7 x + 13 y + (x y) mod 11) mod 97) / 97 * 0.9 - 0.3",
                   "entries": entries}, f, indent=1)
    with gzip.GzipFile(os.path.join(here, "snow_golden.bin.gz"), "wb", mtime=0) as f:
        f.write(bytes(blob))


if __name__ == "__main__":
    main()
