"""Single-core throughput of the ImageNet training input pipeline in Pillow + torchvision:
JPEG decode (torchvision's pil_loader: open + convert("RGB")), RandomResizedCrop(224) +
RandomHorizontalFlip + ToTensor (+ AutoAugment, ImageNet policy); the Python side of
`cargo bench -p ews-data --bench jpeg_pipeline`.

    pip install pillow numpy torch torchvision
    python3 crates/ews-data/benches/pillow_jpeg_pipeline.py --make /tmp/jpeg-bench
    taskset -c 1 python3 crates/ews-data/benches/pillow_jpeg_pipeline.py --images /tmp/jpeg-bench

--make writes the benchmark's JPEG files: the six reference frost photographs
(../shared/datasets/frost, 485x323 to 900x600, as ImageNet's photos) as they are, mirrored
and turned by 90 and 270 degrees, saved by Pillow (libjpeg-turbo) at quality 90 with 4:2:0
chroma, as most ImageNet files are. --images takes any folder of JPEG files instead.
"""

import argparse
import glob
import os
import time

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
FROST = os.path.join(HERE, "..", "..", "..", "..", "shared", "datasets", "frost")


def make(out):
    os.makedirs(out, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(FROST, "frost*")))
    assert sources, f"no frost images in {FROST}"
    for path in sources:
        img = Image.open(path).convert("RGB")
        stem = os.path.splitext(os.path.basename(path))[0]
        variants = {
            "": img,
            "-mirror": img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            "-rot90": img.transpose(Image.Transpose.ROTATE_90),
            "-rot270": img.transpose(Image.Transpose.ROTATE_270),
        }
        for suffix, v in variants.items():
            v.save(os.path.join(out, f"{stem}{suffix}.jpg"), quality=90, subsampling=2)
    print(f"wrote {4 * len(sources)} JPEG files to {out}")


def pil_loader(path):
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def per_core(files, seconds, work):
    for f in files[:4]:
        work(f)
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds:
        for f in files:
            work(f)
        done += len(files)
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--make", help="write the benchmark's JPEG files here and stop")
    parser.add_argument("--images", default="/tmp/jpeg-bench")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.make:
        make(args.make)
        return
    files = sorted(
        p for p in glob.glob(os.path.join(args.images, "**", "*"), recursive=True)
        if p.lower().endswith((".jpg", ".jpeg"))
    )
    assert files, f"no JPEG files in {args.images}"
    import torch
    import torchvision
    from torchvision import transforms

    torch.set_num_threads(1)
    kilopixels = sum(Image.open(f).size[0] * Image.open(f).size[1] for f in files) / len(files) / 1e3
    print(f"{len(files)} JPEG files in {args.images}, {kilopixels:.0f} kilopixels on average")
    print(f"Pillow {Image.__version__}, torchvision {torchvision.__version__}, torch {torch.__version__}")
    decode = per_core(files, args.seconds, pil_loader)
    print(f"decode (Pillow: libjpeg-turbo)              {decode:8.0f} images/s per core")
    standard = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])
    rate = per_core(files, args.seconds, lambda f: standard(pil_loader(f)))
    print(f"decode + RandomResizedCrop + flip + tensor  {rate:8.0f} images/s per core")
    auto = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET),
        transforms.ToTensor(),
    ])
    rate = per_core(files, args.seconds, lambda f: auto(pil_loader(f)))
    print(f"  + AutoAugment (ImageNet policy)           {rate:8.0f} images/s per core")


if __name__ == "__main__":
    main()
