"""Golden frames of ImageNet-P's deterministic perturbation sequences by the reference
formulas (hendrycks/robustness ImageNet-P/create_p/make_imagenet_p.py): motion blur
(ImageMagick through Wand), brightness (scikit-image HSV), translate / rotate / scale / zoom
blur (torchvision 0.2's `affine`, which is Pillow's `Image.transform(AFFINE)` with the inverse
matrix about (w/2 + 0.5, h/2 + 0.5); written out here because today's torchvision uses
(w/2, h/2)) and tilt (OpenCV's warpPerspective as OpenCV 3 and 4 up to 4.10 compute it:
source points rounded to 1/32 pixel, 15-bit fixed-point weights; the dataset was made that
way in 2018. OpenCV 4.11 and later interpolate in float32 and differ by up to 7 levels, so
pin opencv-python-headless==4.10.0.84). Input: the pattern below at 256 x 300 (an
image after Resize(256)); frames are CenterCrop(224) as the reference's. Stored per frame:
the centre 48 x 48 and the top-left 32 x 32 of the 224 x 224 frame.

    pip install numpy pillow scikit-image opencv-python-headless==4.10.0.84 Wand torch torchvision
    apt-get install imagemagick
    python3 crates/ews-augment/tests/golden/make_perturb_golden.py
"""

import gzip
import json
import math
import os
from io import BytesIO

import cv2
import numpy as np
import skimage.color as skcolor
import torch
import torchvision.transforms as trn
from PIL import Image
from wand.api import library as wandlibrary
from wand.image import Image as WandImage
import ctypes

wandlibrary.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double,
                                              ctypes.c_double)

H, W = 256, 300


def pattern():
    y, x, c = np.meshgrid(np.arange(H), np.arange(W), np.arange(3), indexing="ij")
    return ((y + 2 * x + 60 * c + (x * y) // 50) % 256).astype(np.uint8)


def center_crop(img):
    return trn.CenterCrop(224)(img)


def old_affine(img, angle=0.0, translate=(0, 0), scale=1.0, resample=Image.NEAREST):
    w, h = img.size
    cx, cy = w * 0.5 + 0.5, h * 0.5 + 0.5
    # torchvision 0.2.1's _get_inverse_affine_matrix with shear 0, line for line.
    angle, shear = math.radians(angle), math.radians(0)
    scale = 1.0 / scale
    d = math.cos(angle + shear) * math.cos(angle) + math.sin(angle + shear) * math.sin(angle)
    m = [math.cos(angle + shear), math.sin(angle + shear), 0, -math.sin(angle), math.cos(angle), 0]
    m = [scale / d * v for v in m]
    m[2] += m[0] * (-cx - translate[0]) + m[1] * (-cy - translate[1])
    m[5] += m[3] * (-cx - translate[0]) + m[4] * (-cy - translate[1])
    m[2] += cx
    m[5] += cy
    return img.transform((w, h), Image.AFFINE, m, resample)


def motion(x, angle):
    out = BytesIO()
    x.save(out, format="PNG")
    z = WandImage(blob=out.getvalue())
    wandlibrary.MagickMotionBlurImage(z.wand, 10, 3, angle)
    z = cv2.imdecode(np.frombuffer(z.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
    return z[..., [2, 1, 0]]


def brightness(x, c):
    x = np.array(x, copy=True) / 255.
    x = skcolor.rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.uint8(skcolor.hsv2rgb(x) * 255)


def tilt(x, i):
    h, w = x.shape[0:2]
    phi, theta = np.deg2rad(i - 15), np.deg2rad(i - 15)
    f = np.sqrt(w ** 2 + h ** 2)
    P1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    RX = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0],
                   [0, np.sin(theta), np.cos(theta), 0], [0, 0, 0, 1]])
    RY = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0],
                   [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    T = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    P2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    mat = P2 @ T @ RX @ RY @ P1
    return np.asarray(center_crop(Image.fromarray(cv2.warpPerspective(x, mat, (w, h)))))


def zoom_frames(img, wanted):
    z = center_crop(img)
    avg = trn.ToTensor()(z)
    out = {}
    for i in range(1, 31):
        z = center_crop(old_affine(img, scale=1 + 0.004 * i, resample=Image.BILINEAR))
        avg += trn.ToTensor()(z)
        if i in wanted:
            out[i] = np.asarray(trn.ToPILImage()(avg / (i + 1)))
    return out


def main():
    version = tuple(int(v) for v in cv2.__version__.split(".")[:2])
    assert version <= (4, 10), f"OpenCV {cv2.__version__}: use 4.10 (see above)"
    here = os.path.dirname(os.path.abspath(__file__))
    arr = pattern()
    img = Image.fromarray(arr)
    x = center_crop(img)
    entries, blob = [], bytearray()

    def add(perturbation, frame, rgb):
        rgb = np.asarray(rgb, dtype=np.uint8)
        assert rgb.shape == (224, 224, 3), rgb.shape
        for part, window in [("centre", rgb[88:136, 88:136]), ("corner", rgb[:32, :32])]:
            window = np.ascontiguousarray(window)
            entries.append({"perturbation": perturbation, "frame": frame, "part": part,
                            "height": window.shape[0], "width": window.shape[1],
                            "offset": len(blob)})
            blob.extend(window.tobytes())

    for i in [0, 15, 30]:
        add("motion_blur", i, motion(x, (i - 30) * 4))
        add("brightness", i, brightness(x, (i - 15) * 2 / 100.))
        add("scale", i, center_crop(old_affine(img, scale=(i * 2.5 + 40) / 100., resample=Image.BILINEAR)))
    for i in [0, 20, 40]:
        add("translate", i, center_crop(old_affine(img, translate=(i - 20, 0))))
    for i in [0, 10, 30]:
        add("rotate", i, center_crop(old_affine(img, angle=i - 15, resample=Image.BILINEAR)))
    for i in [0, 7, 30]:
        add("tilt", i, tilt(arr, i))
    for i, frame in zoom_frames(img, {1, 30}).items():
        add("zoom_blur", i, frame)
    with open(os.path.join(here, "perturb_golden.json"), "w") as f:
        json.dump({"input": [H, W], "entries": entries}, f, indent=1)
    with gzip.GzipFile(os.path.join(here, "perturb_golden.bin.gz"), "wb", mtime=0) as f:
        f.write(bytes(blob))


if __name__ == "__main__":
    main()
