"""Golden outputs of the frost corruption of hendrycks/robustness on the real textures.

make_cifar_c.py / make_imagenet_c.py: frost = cv2.imread(frostK); for CIFAR
cv2.resize(frost, (0, 0), fx=0.2, fy=0.2); a crop at (x_start, y_start) of the image's size,
BGR -> RGB; np.uint8(np.clip(c[0] * x + c[1] * frost, 0, 255)). The random texture and crop
are given here, so the outputs are those of each (texture, severity, offset).

Run: python3 make_frost_golden.py /path/to/frost-textures (opencv-python-headless, numpy).
Writes frost_golden.json and frost_golden.bin.gz next to this script (ImageNet outputs
subsampled every 7th pixel to keep the file small).
"""
import gzip, json, os, sys

import cv2
import numpy as np

TEXTURES = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
C = {
    "cifar": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "imagenet": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
}
SIZE = {"cifar": 32, "imagenet": 224}
STEP = {"cifar": 1, "imagenet": 7}


def test_image(size):
    y, x, c = np.meshgrid(np.arange(size), np.arange(size), np.arange(3), indexing="ij")
    return ((y * 7 + x * 3 + c * 50) % 256).astype(np.uint8)


def main(folder):
    here = os.path.dirname(os.path.abspath(__file__))
    cases, blob = [], bytearray()
    for table in ["cifar", "imagenet"]:
        size = SIZE[table]
        x = test_image(size)
        for k, name in enumerate(TEXTURES):
            frost = cv2.imread(os.path.join(folder, name))
            if table == "cifar":
                frost = cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)
            max_y, max_x = frost.shape[0] - size - 1, frost.shape[1] - size - 1
            for j, (y0, x0) in enumerate([(0, 0), (max_y // 2, max_x // 3), (max_y, max_x)]):
                severity = (k + j) % 5 + 1
                a, b = C[table][severity - 1]
                crop = frost[y0:y0 + size, x0:x0 + size][..., [2, 1, 0]]
                out = np.uint8(np.clip(a * np.array(x) + b * crop, 0, 255))
                out = np.ascontiguousarray(out[:: STEP[table], :: STEP[table]])
                cases.append({
                    "table": table, "texture": name, "severity": severity,
                    "y0": int(y0), "x0": int(x0), "offset": len(blob),
                    "shape": list(out.shape), "step": STEP[table],
                    "texture_shape": list(frost.shape),
                })
                blob += out.tobytes()
    with open(os.path.join(here, "frost_golden.json"), "w") as f:
        json.dump({"opencv": cv2.__version__, "cases": cases}, f, indent=1)
    with gzip.GzipFile(os.path.join(here, "frost_golden.bin.gz"), "wb", mtime=0) as f:
        f.write(bytes(blob))


if __name__ == "__main__":
    main(sys.argv[1])
