"""Reference outputs of the image operations, computed with Pillow.

Writes ops_golden.json (a manifest) and ops_golden.bin.gz (the raw RGB bytes of every input
and output, concatenated). Inputs: three CIFAR-10 test images (decoded from the JPEG mirror,
stored in the golden file so the test does not need the dataset) and a 224 px centre crop of
scikit-image's public-domain `astronaut` photograph.

Operations follow Pillow's ImageOps / ImageEnhance / Image.transform / Image.rotate and
torchvision's `_apply_op` on PIL images (its affine matrix formula is reproduced below).

    pip install pillow numpy scikit-image
    python3 make_ops_golden.py /path/to/cifar10-jpeg-root  # the folder holding test/<class>/
"""

import gzip
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))


def tv_inverse_affine(center, angle, translate, scale, shear):
    """torchvision.transforms.functional._get_inverse_affine_matrix."""
    rot = math.radians(angle)
    sx = math.radians(shear[0])
    sy = math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    matrix = [d, -b, 0.0, -c, a, 0.0]
    matrix = [x / scale for x in matrix]
    matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty)
    matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty)
    matrix[2] += cx
    matrix[5] += cy
    return matrix


RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def tv_apply(img, op, magnitude, interpolation, fill):
    """torchvision.transforms.autoaugment._apply_op for PIL images."""
    w, h = img.size
    resample = RESAMPLE[interpolation]
    if op in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(magnitude))
        shear = [angle, 0.0] if op == "ShearX" else [0.0, angle]
        m = tv_inverse_affine([0, 0], 0.0, [0, 0], 1.0, shear)
        return img.transform(img.size, Image.AFFINE, m, resample, fillcolor=fill)
    if op in ("TranslateX", "TranslateY"):
        t = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        m = tv_inverse_affine([w * 0.5, h * 0.5], 0.0, t, 1.0, [0.0, 0.0])
        return img.transform(img.size, Image.AFFINE, m, resample, fillcolor=fill)
    if op == "Rotate":
        return img.rotate(magnitude, resample, False, None, fillcolor=fill)
    if op == "Brightness":
        return ImageEnhance.Brightness(img).enhance(1.0 + magnitude)
    if op == "Color":
        return ImageEnhance.Color(img).enhance(1.0 + magnitude)
    if op == "Contrast":
        return ImageEnhance.Contrast(img).enhance(1.0 + magnitude)
    if op == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(1.0 + magnitude)
    if op == "Posterize":
        return ImageOps.posterize(img, int(magnitude))
    if op == "Solarize":
        return ImageOps.solarize(img, magnitude)
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Invert":
        return ImageOps.invert(img)
    raise ValueError(op)


def pil_apply(img, op, arg, interpolation, fill):
    """Direct Pillow calls (AugMix and the original AutoAugment call these)."""
    resample = RESAMPLE[interpolation]
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "invert":
        return ImageOps.invert(img)
    if op == "posterize":
        return ImageOps.posterize(img, int(arg))
    if op == "solarize":
        return ImageOps.solarize(img, arg)
    if op == "color":
        return ImageEnhance.Color(img).enhance(arg)
    if op == "contrast":
        return ImageEnhance.Contrast(img).enhance(arg)
    if op == "brightness":
        return ImageEnhance.Brightness(img).enhance(arg)
    if op == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(arg)
    if op == "rotate":
        return img.rotate(arg, resample=resample, fillcolor=fill)
    if op == "affine":
        return img.transform(img.size, Image.AFFINE, tuple(arg), resample, fillcolor=fill)
    raise ValueError(op)


def cases(size):
    """(kind, op, argument, interpolation, fill) for one image size."""
    out = []
    for op in ("autocontrast", "equalize", "invert"):
        out.append(("pil", op, None, "nearest", None))
    for bits in (1, 2, 3, 4, 6, 8):
        out.append(("pil", "posterize", bits, "nearest", None))
    for t in (0.0, 28.333333333333332, 128, 200.5, 255.0, 256):
        out.append(("pil", "solarize", t, "nearest", None))
    for op in ("color", "contrast", "brightness", "sharpness"):
        for f in (0.0, 0.1, 0.37, 0.73, 1.0, 1.45, 1.9):
            out.append(("pil", op, f, "nearest", None))
    s = size
    for interp in ("nearest", "bilinear"):
        for fill in (None, [128, 128, 128]):
            for deg in (-30.0, -13.333333, 2, 17, 30.0, 90, 180, 270):
                out.append(("pil", "rotate", deg, interp, fill))
            for m in (-0.3, -0.1, 0.2333, 0.3):
                out.append(("pil", "affine", [1, m, 0, 0, 1, 0], interp, fill))
                out.append(("pil", "affine", [1, 0, 0, m, 1, 0], interp, fill))
            for t in (-s // 3, -3, 5, s // 3):
                out.append(("pil", "affine", [1, 0, t, 0, 1, 0], interp, fill))
                out.append(("pil", "affine", [1, 0, 0, 0, 1, t], interp, fill))
            out.append(("pil", "affine", [0.9, 0.2, 1.5, -0.1, 1.1, -2.25], interp, fill))
    # torchvision's magnitude bins (float32 linspace values) for its affine ops.
    shear = [float(v) for v in np.linspace(0, 0.3, 10, dtype=np.float32)]
    trans = [float(v) for v in np.linspace(0, 150.0 / 331.0 * s, 10, dtype=np.float32)]
    for interp in ("nearest", "bilinear"):
        for fill in (None, [128, 128, 128]):
            for i in (1, 5, 9):
                for sign in (1, -1):
                    out.append(("tv", "ShearX", sign * shear[i], interp, fill))
                    out.append(("tv", "ShearY", sign * shear[i], interp, fill))
                    out.append(("tv", "TranslateX", sign * trans[i], interp, fill))
                    out.append(("tv", "TranslateY", sign * trans[i], interp, fill))
                    out.append(("tv", "Rotate", sign * [0, 10 / 3, 0, 0, 0, 50 / 3, 0, 0, 0, 30][i], interp, fill))
    return out


def main():
    root = sys.argv[1]
    inputs = []
    for cls in ("airplane", "cat", "truck"):
        folder = os.path.join(root, "test", cls)
        name = sorted(os.listdir(folder))[0]
        img = Image.open(os.path.join(folder, name)).convert("RGB")
        inputs.append((f"cifar-{cls}-{name}", img))
    import skimage.data

    astro = Image.fromarray(skimage.data.astronaut()).convert("RGB")
    astro = astro.resize((256, 256), Image.BILINEAR).crop((16, 16, 240, 240))
    inputs.append(("astronaut224", astro))

    blob = bytearray()
    entries = []

    def add(record, img):
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        record.update(height=arr.shape[0], width=arr.shape[1], offset=len(blob))
        blob.extend(arr.tobytes())
        entries.append(record)

    for name, img in inputs:
        add({"image": name, "kind": "input"}, img)
        all_cases = cases(img.size[0])
        if img.size[0] > 64:
            # Keep the file small: every op, fewer arguments at 224 px.
            first = {}
            for i, case in enumerate(all_cases):
                first.setdefault((case[0], case[1]), i)
            keep = set(first.values()) | set(range(0, len(all_cases), 12))
            all_cases = [c for i, c in enumerate(all_cases) if i in keep]
        for kind, op, arg, interp, fill in all_cases:
            pil_fill = tuple(fill) if fill is not None else None
            if kind == "tv":
                out = tv_apply(img, op, arg, interp, pil_fill)
            else:
                out = pil_apply(img, op, arg, interp, pil_fill)
            add(
                {
                    "image": name,
                    "kind": kind,
                    "op": op,
                    "arg": arg,
                    "interpolation": interp,
                    "fill": fill if fill is not None else [0, 0, 0],
                },
                out,
            )

    import PIL

    manifest = {"pillow": PIL.__version__, "numpy": np.__version__, "entries": entries}
    with open(os.path.join(HERE, "ops_golden.json"), "w") as f:
        json.dump(manifest, f, separators=(",", ":"))
    with gzip.open(os.path.join(HERE, "ops_golden.bin.gz"), "wb", compresslevel=9) as f:
        f.write(bytes(blob))
    print(f"{len(entries)} entries, {len(blob)} bytes")


if __name__ == "__main__":
    main()
