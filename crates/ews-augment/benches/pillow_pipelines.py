"""Single-core throughput of the same augmentation pipelines in Pillow + numpy, the
reference side of `cargo bench -p ews-augment --bench pipelines`.

    pip install pillow numpy
    python3 crates/ews-augment/benches/pillow_pipelines.py [--seconds S]

Chains, as in torchvision's CIFAR recipes and the AugMix release: pad (size/8, zeros) +
random crop + horizontal flip; then torchvision's AutoAugment (CIFAR-10 policy at 32 px,
ImageNet at 224 px; nearest, black fill) or the original AugMix (width 3, depth 1-3,
severity 3, bilinear); then ToTensor (CHW float32 / 255). Inputs: the golden images in
tests/golden.
"""

import gzip
import json
import os
import random
import sys
import time

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "tests", "golden")
sys.path.insert(0, GOLDEN)
from make_ops_golden import tv_apply  # noqa: E402  (torchvision's _apply_op on PIL images)


def inputs():
    manifest = json.load(open(os.path.join(GOLDEN, "ops_golden.json")))
    blob = gzip.open(os.path.join(GOLDEN, "ops_golden.bin.gz")).read()
    small, large = [], None
    for e in manifest["entries"]:
        if e["kind"] != "input":
            continue
        h, w, at = e["height"], e["width"], e["offset"]
        arr = np.frombuffer(blob[at : at + h * w * 3], dtype=np.uint8).reshape(h, w, 3)
        img = Image.fromarray(arr.copy())
        if h == 224:
            large = img
        else:
            small.append(img)
    return small, [large]


def standard(img):
    s = img.size[0]
    p = s // 8
    padded = ImageOps.expand(img, border=p, fill=0)
    x, y = random.randint(0, 2 * p), random.randint(0, 2 * p)
    out = padded.crop((x, y, x + s, y + s))
    if random.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def to_tensor(img):
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


# torchvision AutoAugment (PIL path), CIFAR-10 and ImageNet tables.
CIFAR10 = [
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
]
IMAGENET = [
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)), (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)), (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)), (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
]


def tv_space(size):
    lin = lambda end: np.linspace(0, end, 10, dtype=np.float32)
    return {
        "ShearX": (lin(0.3), True), "ShearY": (lin(0.3), True),
        "TranslateX": (lin(150 / 331 * size), True), "TranslateY": (lin(150 / 331 * size), True),
        "Rotate": (lin(30), True), "Brightness": (lin(0.9), True), "Color": (lin(0.9), True),
        "Contrast": (lin(0.9), True), "Sharpness": (lin(0.9), True),
        "Posterize": (8 - np.round(np.arange(10) / 2.25).astype(int), False),
        "Solarize": (np.linspace(255, 0, 10, dtype=np.float32), False),
        "AutoContrast": (None, False), "Equalize": (None, False), "Invert": (None, False),
    }


def tv_op(img, op, m):
    """torchvision's `_apply_op` on PIL images: nearest, black fill."""
    return tv_apply(img, op, m, "nearest", (0, 0, 0))


def autoaugment(img):
    table = CIFAR10 if img.size[0] <= 64 else IMAGENET
    space = tv_space(img.size[0])
    sub = table[random.randrange(len(table))]
    for op, p, b in sub:
        if random.random() <= p:
            mags, signed = space[op]
            m = float(mags[b]) if b is not None else 0.0
            if signed and random.random() < 0.5:
                m = -m
            img = tv_op(img, op, m)
    return img


# The original AugMix release's operations.
def int_parameter(level, maxval):
    return int(level * maxval / 10)


def float_parameter(level, maxval):
    return float(level) * maxval / 10.0


def sample_level(n):
    return np.random.uniform(low=0.1, high=n)


def am_op(img, op, severity):
    s = img.size[0]
    level = sample_level(severity)
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "posterize":
        return ImageOps.posterize(img, 4 - int_parameter(level, 4))
    if op == "solarize":
        return ImageOps.solarize(img, 256 - int_parameter(level, 256))
    sign = -1 if np.random.uniform() > 0.5 else 1
    if op == "rotate":
        return img.rotate(sign * int_parameter(level, 30), resample=Image.BILINEAR)
    if op == "shear_x":
        m = sign * float_parameter(level, 0.3)
        return img.transform((s, s), Image.AFFINE, (1, m, 0, 0, 1, 0), resample=Image.BILINEAR)
    if op == "shear_y":
        m = sign * float_parameter(level, 0.3)
        return img.transform((s, s), Image.AFFINE, (1, 0, 0, m, 1, 0), resample=Image.BILINEAR)
    t = sign * int_parameter(level, s / 3)
    if op == "translate_x":
        return img.transform((s, s), Image.AFFINE, (1, 0, t, 0, 1, 0), resample=Image.BILINEAR)
    return img.transform((s, s), Image.AFFINE, (1, 0, 0, 0, 1, t), resample=Image.BILINEAR)


AUGMIX_OPS = ["autocontrast", "equalize", "posterize", "rotate", "solarize",
              "shear_x", "shear_y", "translate_x", "translate_y"]


def augmix(img):
    ws = np.float32(np.random.dirichlet([1.0] * 3))
    m = np.float32(np.random.beta(1.0, 1.0))
    mix = np.zeros((3, img.size[1], img.size[0]), dtype=np.float32)
    for i in range(3):
        aug = img.copy()
        for _ in range(np.random.randint(1, 4)):
            aug = am_op(aug, AUGMIX_OPS[np.random.randint(len(AUGMIX_OPS))], 3)
        mix += ws[i] * to_tensor(aug)
    return (1 - m) * to_tensor(img) + m * mix


PIPELINES = [
    ("standard (pad/crop/flip)", lambda i: to_tensor(standard(i))),
    ("standard + AutoAugment", lambda i: to_tensor(autoaugment(standard(i)))),
    ("standard + AugMix", lambda i: augmix(standard(i))),
    ("standard + AugMix JSD (clean + 2 views)",
     lambda i: (lambda x: (to_tensor(x), augmix(x), augmix(x)))(standard(i))),
]


def throughput(images, fn, seconds):
    for img in images:
        fn(img)
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds:
        for img in images:
            fn(img)
        done += len(images)
    return done / (time.perf_counter() - start)


def main():
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 2.0
    random.seed(0)
    np.random.seed(0)
    small, large = inputs()
    import PIL
    print(f"| pipeline | size | Pillow {PIL.__version__} images/s, 1 core |")
    print("|---|---|---|")
    for size, images in ((32, small), (224, large)):
        for name, fn in PIPELINES:
            print(f"| {name} | {size} | {throughput(images, fn, seconds):.0f} |")


if __name__ == "__main__":
    main()
