"""Single-core time per 224 px image of the reference ImageNet-C generator's corruptions
(hendrycks/robustness `ImageNet-C/create_c/make_imagenet_c.py`, run as it is), the Python
side of `cargo bench -p ews-data --bench imagenet_c`.

The reference file is not copied here: pass its path (a checkout of hendrycks/robustness).
Its function definitions are executed (not its loop over the ImageNet folder) after four
shims for today's libraries (NumPy 2, SciPy 1.17, scikit-image 0.26): skimage's `gaussian(multichannel=True)` (now `channel_axis`),
`scipy.ndimage.interpolation` (now `scipy.ndimage`) and `np.fromstring` on bytes (now
`np.frombuffer`), `np.float_` (now `np.float64`). Each image is the reference's input: `Resize(256)` + `CenterCrop(224)` of a
JPEG file; timed: the corruption and `np.uint8` of its result, as `DistortImageFolder` does
before saving (the JPEG encoding of the saved file is not timed, on either side).

    pip install numpy scipy scikit-image opencv-python-headless pillow Wand torch torchvision
    apt-get install imagemagick
    taskset -c 1 python3 crates/ews-data/benches/reference_imagenet_c.py \\
        --reference robustness/ImageNet-C/create_c/make_imagenet_c.py \\
        --images /tmp/jpeg-bench --frost-dir ../shared/datasets/frost [--count 4]
"""

import argparse
import ast
import glob
import os
import sys
import time

import numpy as np
import scipy.ndimage
import skimage.filters

SHIMMED_GAUSSIAN = skimage.filters.gaussian


def gaussian(image, sigma=1, multichannel=None, **kwargs):
    if multichannel:
        kwargs["channel_axis"] = -1
    return SHIMMED_GAUSSIAN(image, sigma=sigma, **kwargs)


def install_shims():
    skimage.filters.gaussian = gaussian
    sys.modules["scipy.ndimage.interpolation"] = scipy.ndimage
    np.fromstring = lambda data, dtype=float: np.frombuffer(data, dtype)
    np.float_ = np.float64


def load_reference(path):
    source = open(path).read()
    tree = ast.parse(source)
    # Everything before the script's own run (`import collections` and the loop after it).
    stop = next(i for i, n in enumerate(tree.body)
                if isinstance(n, ast.Import) and n.names[0].name == "collections")
    module = ast.Module(body=tree.body[:stop], type_ignores=[])
    namespace = {"__name__": "make_imagenet_c"}
    exec(compile(module, path, "exec"), namespace)
    return namespace


NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
         "defocus_blur", "glass_blur", "zoom_blur", "fog", "brightness", "contrast", "saturate",
         "pixelate", "jpeg_compression", "motion_blur", "snow", "elastic_transform", "frost",
         "spatter"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", required=True, help="path to make_imagenet_c.py")
    parser.add_argument("--images", default="/tmp/jpeg-bench")
    parser.add_argument("--frost-dir", required=True, help="folder with frost1.png ... frost6.jpg")
    parser.add_argument("--count", type=int, default=4, help="images (each at 5 severities)")
    args = parser.parse_args()
    install_shims()
    ref = load_reference(os.path.abspath(args.reference))
    from PIL import Image
    import torchvision.transforms as trn
    prepare = trn.Compose([trn.Resize(256), trn.CenterCrop(224)])
    files = sorted(glob.glob(os.path.join(args.images, "**", "*.jp*g"), recursive=True))
    images = [prepare(Image.open(f).convert("RGB")) for f in files[:args.count]]
    os.chdir(args.frost_dir)  # the reference reads ./frost1.png ...
    np.random.seed(0)
    total = {}
    print("| corruption | reference ms/image (mean of severities 1-5) |")
    print("|---|---|")
    for name in NAMES:
        method = ref[name]
        method(images[0], 1)  # warm-up (imports, caches)
        start = time.perf_counter()
        for severity in range(1, 6):
            for img in images:
                np.uint8(method(img, severity))
        per = (time.perf_counter() - start) / (5 * len(images))
        total[name] = per
        print(f"| {name} | {per * 1e3:.2f} |", flush=True)
    print(f"| all {len(NAMES)} | {sum(total.values()) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
