"""Reference outputs of the deterministic corruptions, computed with the reference
generators' formulas and libraries (hendrycks/robustness make_cifar_c.py and
make_imagenet_c.py): contrast, brightness, saturate, gaussian_blur, defocus_blur, zoom_blur,
pixelate, jpeg_compression (Pillow's JPEG save and load).

Inputs are the ones of ops_golden (three CIFAR-10 test images with the CIFAR table, the
224 px photo with the ImageNet table). Writes corrupt_golden.json and corrupt_golden.bin.gz
(raw RGB bytes). At 224 px only the centre 64 x 64 of each output is stored (the corruption
runs on the whole image) to keep the file small.

    pip install numpy scipy scikit-image opencv-python-headless pillow
    apt-get install imagemagick        # ImageMagick 6 (convert), for motion blur
    python3 make_corrupt_golden.py
"""

import gzip
from io import BytesIO
import json
import os

import cv2
import numpy as np
import PIL
import scipy
import skimage
from PIL import Image
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian

HERE = os.path.dirname(os.path.abspath(__file__))


def disk(radius, alias_blur=0.1, dtype=np.float32):
    if radius <= 8:
        L = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        L = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased_disk = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=dtype)
    aliased_disk /= np.sum(aliased_disk)
    return cv2.GaussianBlur(aliased_disk, ksize=ksize, sigmaX=alias_blur)


def clipped_zoom(img, zoom_factor):
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


TABLES = {
    "cifar": {
        "contrast": [.75, .5, .4, .3, 0.15],
        "brightness": [.05, .1, .15, .2, .3],
        "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
        "gaussian_blur": [.4, .6, 0.7, .8, 1],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                      np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "jpeg_compression": [80, 65, 58, 50, 40],
    },
    "imagenet": {
        "contrast": [0.4, .3, .2, .1, .05],
        "brightness": [.1, .2, .3, .4, .5],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                      np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "jpeg_compression": [25, 18, 15, 10, 7],
    },
}


def corrupt(img, name, c):
    """The reference functions (PIL image in, array out)."""
    if name == "contrast":
        x = np.array(img) / 255.
        means = np.mean(x, axis=(0, 1), keepdims=True)
        return np.clip((x - means) * c + means, 0, 1) * 255
    if name == "brightness":
        x = skimage.color.rgb2hsv(np.array(img) / 255.)
        x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
        return np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255
    if name == "saturate":
        x = skimage.color.rgb2hsv(np.array(img) / 255.)
        x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
        return np.clip(skimage.color.hsv2rgb(x), 0, 1) * 255
    if name == "gaussian_blur":
        # multichannel=True in the reference; channel_axis=-1 in current scikit-image.
        return np.clip(gaussian(np.array(img) / 255., sigma=c, channel_axis=-1), 0, 1) * 255
    if name == "defocus_blur":
        x = np.array(img) / 255.
        kernel = disk(radius=c[0], alias_blur=c[1])
        channels = np.array([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)])
        return np.clip(channels.transpose((1, 2, 0)), 0, 1) * 255
    if name == "zoom_blur":
        x = (np.array(img) / 255.).astype(np.float32)
        out = np.zeros_like(x)
        for zoom_factor in c:
            out += clipped_zoom(x, zoom_factor)
        x = (x + out) / (len(c) + 1)
        return np.clip(x, 0, 1) * 255
    if name == "pixelate":
        w, h = img.size
        x = img.resize((int(w * c), int(h * c)), Image.BOX)
        return np.array(x.resize((w, h), Image.BOX))
    if name == "jpeg_compression":
        output = BytesIO()
        img.save(output, "JPEG", quality=c)
        return np.array(Image.open(output))
    raise ValueError(name)


def main():
    manifest = json.load(open(os.path.join(HERE, "ops_golden.json")))
    blob = gzip.open(os.path.join(HERE, "ops_golden.bin.gz")).read()
    out_blob = bytearray()
    entries = []
    for e in manifest["entries"]:
        if e["kind"] != "input":
            continue
        h, w, at = e["height"], e["width"], e["offset"]
        arr = np.frombuffer(blob[at:at + h * w * 3], dtype=np.uint8).reshape(h, w, 3)
        img = Image.fromarray(arr.copy())
        table = "imagenet" if h > 64 else "cifar"
        for name, params in TABLES[table].items():
            for severity in range(1, 6):
                out = np.uint8(corrupt(img, name, params[severity - 1]))
                crop = None
                if h > 64:
                    top = (h - 64) // 2
                    out = out[top:top + 64, top:top + 64]
                    crop = [top, top, 64, 64]
                entries.append({
                    "image": e["image"], "table": table, "corruption": name,
                    "severity": severity, "crop": crop, "offset": len(out_blob),
                    "height": out.shape[0], "width": out.shape[1],
                })
                out_blob.extend(np.ascontiguousarray(out).tobytes())
    # Pillow's bilinear resize (torchvision's Resize on PIL images), up and down.
    for e in manifest["entries"]:
        if e["kind"] != "input":
            continue
        h, w, at = e["height"], e["width"], e["offset"]
        img = Image.fromarray(np.frombuffer(blob[at:at + h * w * 3], np.uint8).reshape(h, w, 3).copy())
        for size in ((h * 5 // 4, w * 9 // 8), (h * 3 // 7, w * 2 // 5)):
            out = np.array(img.resize((size[1], size[0]), Image.BILINEAR))
            entries.append({
                "image": e["image"], "table": "resize", "corruption": "resize_bilinear",
                "severity": 0, "crop": None, "offset": len(out_blob),
                "height": out.shape[0], "width": out.shape[1],
            })
            out_blob.extend(out.tobytes())
    # ImageMagick's motion blur (what the reference calls through Wand's
    # MagickMotionBlurImage; `convert -motion-blur RxS+A` is the same function), at fixed
    # angles, RGB and greyscale (snow blurs a greyscale layer).
    import subprocess
    import tempfile
    blur_params = {"cifar": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
                   "imagenet": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]}
    angles = [-40.0, -12.5, 0.0, 25.0, 44.0]
    with tempfile.TemporaryDirectory() as tmp:
        for e in manifest["entries"]:
            if e["kind"] != "input":
                continue
            h, w, at = e["height"], e["width"], e["offset"]
            arr = np.frombuffer(blob[at:at + h * w * 3], np.uint8).reshape(h, w, 3).copy()
            table = "imagenet" if h > 64 else "cifar"
            for mode in ("RGB", "L"):
                src = Image.fromarray(arr).convert(mode)
                src.save(os.path.join(tmp, "in.png"))
                for (radius, sigma), angle in zip(blur_params[table], angles):
                    subprocess.run(["convert", os.path.join(tmp, "in.png"), "-motion-blur",
                                    f"{radius}x{sigma}+{angle}", os.path.join(tmp, "out.png")],
                                   check=True)
                    out = np.array(Image.open(os.path.join(tmp, "out.png")).convert(mode))
                    entries.append({
                        "image": e["image"], "table": "imagemagick", "corruption": "motion_blur_raw",
                        "severity": 0, "crop": None, "offset": len(out_blob),
                        "height": out.shape[0], "width": out.shape[1],
                        "channels": 3 if mode == "RGB" else 1,
                        "radius": radius, "sigma": sigma, "angle": angle,
                    })
                    out_blob.extend(np.ascontiguousarray(out).tobytes())
    versions_im = subprocess.run(["convert", "-version"], capture_output=True, text=True).stdout.split("\n")[0]

    # OpenCV building blocks of spatter on a smoothed random liquid layer (fixed seed).
    rng = np.random.default_rng(5)
    liquid = gaussian(rng.normal(0.65, 0.3, size=(64, 64)), sigma=1.5)
    liquid[liquid < 0.62] = 0
    liquid_u8 = (liquid * 255).astype(np.uint8)
    edges = cv2.Canny(liquid_u8, 50, 150)
    dist = cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5).astype(np.float32)
    equalized = cv2.equalizeHist(np.minimum(dist, 20).astype(np.uint8) * 12)
    cv_entries = {}
    for name, arr in (("liquid_u8", liquid_u8), ("canny", edges), ("distance_f32", dist),
                      ("equalized", equalized)):
        cv_entries[name] = {"offset": len(out_blob), "shape": list(arr.shape), "dtype": str(arr.dtype)}
        out_blob.extend(np.ascontiguousarray(arr).tobytes())
    versions = {"numpy": np.__version__, "scipy": scipy.__version__,
                "scikit-image": skimage.__version__, "opencv": cv2.__version__,
                "pillow": PIL.__version__, "imagemagick": versions_im}
    with open(os.path.join(HERE, "corrupt_golden.json"), "w") as f:
        json.dump({"versions": versions, "entries": entries, "opencv_blocks": cv_entries}, f,
                  separators=(",", ":"))
    with gzip.open(os.path.join(HERE, "corrupt_golden.bin.gz"), "wb", compresslevel=9) as f:
        f.write(bytes(out_blob))
    print(f"{len(entries)} entries, {len(out_blob)} bytes")


if __name__ == "__main__":
    main()
