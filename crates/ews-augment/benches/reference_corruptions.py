"""Single-core time per 32 px image of the reference corruption formulas (hendrycks/robustness
make_cifar_c.py, CIFAR table), for every corruption but frost (which needs the texture files); the Python side of
`cargo bench -p ews-augment --bench corruptions`.

    pip install numpy scipy scikit-image opencv-python-headless pillow Wand
    apt-get install imagemagick
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
    if name == "motion_blur":
        return motion_blur(img, severity)
    if name == "snow":
        return snow(img, severity)
    if name == "elastic_transform":
        return elastic_transform(img, severity)
    if name == "spatter":
        return spatter(img, severity)
    return golden.corrupt(img, name, golden.TABLES["cifar"][name][s])


def _motion_image():
    import ctypes
    from wand.api import library as wandlibrary
    from wand.image import Image as WandImage
    wandlibrary.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double,
                                                  ctypes.c_double, ctypes.c_double)

    class MotionImage(WandImage):
        def motion_blur(self, radius=0.0, sigma=0.0, angle=0.0):
            wandlibrary.MagickMotionBlurImage(self.wand, radius, sigma, angle)
    return MotionImage


def motion_blur(x, severity):
    import cv2
    from io import BytesIO
    c = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    output = BytesIO()
    x.save(output, format='PNG')
    x = _motion_image()(blob=output.getvalue())
    x.motion_blur(radius=c[0], sigma=c[1], angle=np.random.uniform(-45, 45))
    x = cv2.imdecode(np.frombuffer(x.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
    if x.shape != (32, 32):
        return np.clip(x[..., [2, 1, 0]], 0, 255)
    return np.clip(np.array([x, x, x]).transpose((1, 2, 0)), 0, 255)


def snow(x, severity):
    import cv2
    from io import BytesIO
    c = [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
    x = np.array(x, dtype=np.float32) / 255.
    snow_layer = np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    snow_layer = golden.clipped_zoom(snow_layer[..., np.newaxis], c[2])
    snow_layer[snow_layer < c[3]] = 0
    snow_layer = Image.fromarray((np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8), mode='L')
    output = BytesIO()
    snow_layer.save(output, format='PNG')
    snow_layer = _motion_image()(blob=output.getvalue())
    snow_layer.motion_blur(radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45))
    snow_layer = cv2.imdecode(np.frombuffer(snow_layer.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED) / 255.
    snow_layer = snow_layer[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(32, 32, 1) * 1.5 + 0.5)
    return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255


def elastic_transform(image, severity):
    import cv2
    from scipy.ndimage import map_coordinates
    IMSIZE = 32
    c = [(IMSIZE * 0, IMSIZE * 0, IMSIZE * 0.08), (IMSIZE * 0.05, IMSIZE * 0.2, IMSIZE * 0.07),
         (IMSIZE * 0.08, IMSIZE * 0.06, IMSIZE * 0.06), (IMSIZE * 0.1, IMSIZE * 0.04, IMSIZE * 0.05),
         (IMSIZE * 0.1, IMSIZE * 0.03, IMSIZE * 0.03)][severity - 1]
    image = np.array(image, dtype=np.float32) / 255.
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + np.random.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(np.random.uniform(-1, 1, size=shape[:2]), c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian(np.random.uniform(-1, 1, size=shape[:2]), c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode='reflect').reshape(shape), 0, 1) * 255


def spatter(x, severity):
    import cv2
    c = [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
         (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)][severity - 1]
    x = np.array(x, dtype=np.float32) / 255.
    liquid_layer = np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    liquid_layer = gaussian(liquid_layer, sigma=c[2])
    liquid_layer[liquid_layer < c[3]] = 0
    if c[5] == 0:
        liquid_layer = (liquid_layer * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid_layer, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(liquid_layer * dist, cv2.COLOR_GRAY2BGRA)
        m /= np.max(m, axis=(0, 1))
        m *= c[4]
        color = np.concatenate((175 / 255. * np.ones_like(m[..., :1]), 238 / 255. * np.ones_like(m[..., :1]),
                                238 / 255. * np.ones_like(m[..., :1])), axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    m = np.where(liquid_layer > c[3], 1, 0)
    m = gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    color = np.concatenate((63 / 255. * np.ones_like(x[..., :1]), 42 / 255. * np.ones_like(x[..., :1]),
                            20 / 255. * np.ones_like(x[..., :1])), axis=2)
    color *= m[..., np.newaxis]
    x *= (1 - m[..., np.newaxis])
    return np.clip(x + color, 0, 1) * 255


# frost needs the reference texture files: not timed here. motion_blur and snow need
# ImageMagick 6 and `pip install Wand`.
NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
         "defocus_blur", "glass_blur", "zoom_blur", "fog", "brightness", "contrast", "saturate",
         "pixelate", "jpeg_compression", "elastic_transform", "spatter", "motion_blur", "snow"]


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
