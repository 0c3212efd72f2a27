"""Single-core time per 32 px image of the reference corruption formulas (hendrycks/robustness
make_cifar_c.py, CIFAR table), for the corruptions ews implements; the Python side of
`cargo bench -p ews-augment --bench corruptions`.

    pip install numpy scipy scikit-image opencv-python-headless pillow
    python3 crates/ews-augment/benches/reference_corruptions.py [--images N]
"""

import gzip
import json
import os
import sys
import time

import numpy as np
import skimage as sk
from PIL import Image
from skimage.filters import gaussian

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
import make_corrupt_golden as golden  # noqa: E402  (the deterministic reference functions)


def plasma_fractal(mapsize=32, wibbledecay=3):
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

    def fillsquares():
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)

    def filldiamonds():
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def random_corruption(img, name, severity):
    s = severity - 1
    x = np.array(img) / 255.
    if name == "gaussian_noise":
        c = [0.04, 0.06, .08, .09, .10][s]
        return np.clip(x + np.random.normal(size=x.shape, scale=c), 0, 1) * 255
    if name == "shot_noise":
        c = [500, 250, 100, 75, 50][s]
        return np.clip(np.random.poisson(x * c) / c, 0, 1) * 255
    if name == "impulse_noise":
        c = [.01, .02, .03, .05, .07][s]
        return np.clip(sk.util.random_noise(x, mode='s&p', amount=c), 0, 1) * 255
    if name == "speckle_noise":
        c = [.06, .1, .12, .16, .2][s]
        return np.clip(x + x * np.random.normal(size=x.shape, scale=c), 0, 1) * 255
    if name == "glass_blur":
        c = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][s]
        x = np.uint8(gaussian(x, sigma=c[0], channel_axis=-1) * 255)
        for _ in range(c[2]):
            for h in range(32 - c[1], c[1], -1):
                for w in range(32 - c[1], c[1], -1):
                    dx, dy = np.random.randint(-c[1], c[1], size=(2,))
                    hp, wp = h + dy, w + dx
                    x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
        return np.clip(gaussian(x / 255., sigma=c[0], channel_axis=-1), 0, 1) * 255
    if name == "fog":
        c = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][s]
        max_val = x.max()
        x = x + c[0] * plasma_fractal(wibbledecay=c[1])[:32, :32][..., np.newaxis]
        return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255
    return golden.corrupt(img, name, golden.TABLES["cifar"][name][s])


NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
         "defocus_blur", "glass_blur", "zoom_blur", "fog", "brightness", "contrast", "saturate",
         "pixelate"]


def main():
    n = int(sys.argv[sys.argv.index("--images") + 1]) if "--images" in sys.argv else 40
    manifest = json.load(open(os.path.join(HERE, "..", "tests", "golden", "ops_golden.json")))
    blob = gzip.open(os.path.join(HERE, "..", "tests", "golden", "ops_golden.bin.gz")).read()
    images = []
    for e in manifest["entries"]:
        if e["kind"] == "input" and e["height"] == 32:
            a = np.frombuffer(blob[e["offset"]:e["offset"] + 3072], np.uint8).reshape(32, 32, 3)
            images.append(Image.fromarray(a.copy()))
    np.random.seed(0)
    total = 0.0
    print("| corruption | reference ms/image (mean of severities 1-5) |")
    print("|---|---|")
    for name in NAMES:
        start = time.perf_counter()
        for severity in range(1, 6):
            for i in range(n):
                np.uint8(random_corruption(images[i % len(images)], name, severity))
        per = (time.perf_counter() - start) / (5 * n)
        total += per
        print(f"| {name} | {per * 1e3:.3f} |")
    print(f"| all {len(NAMES)} | {total * 1e3:.2f} ms per image for every corruption |")
    print(f"full CIFAR-10-C for these {len(NAMES)} corruptions (x5 severities x10,000): "
          f"{total * 5 * 10000 / 60:.1f} core-minutes")


if __name__ == "__main__":
    main()
