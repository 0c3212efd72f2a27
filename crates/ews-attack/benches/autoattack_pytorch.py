"""PyTorch side of the AutoAttack comparison: torchattacks against a trained ews run, on CPU.

Runs, on the same images and the same weights that `ews attack --run DIR --n N` uses:
clean accuracy, torchattacks' AutoAttack (`torchattacks.AutoAttack(model, norm='Linf',
eps=eps, version=..., n_classes=C, seed=0)`) and torchattacks' PGD-20 (step eps/4, random
start), each timed with a wall clock, with `torch.set_num_threads(--threads)`. Prints the
figures and writes them as JSON (`--out`).

    # 1. ews: the weights with PyTorch names (once per run; `--weights best` is what
    #    `ews attack` attacks), then the attack itself.
    ews export --run DIR --out DIR/pytorch.safetensors
    RAYON_NUM_THREADS=2 ews attack --run DIR --attack autoattack --n 100 --eps 8/255
    # 2. PyTorch:
    python3 crates/ews-attack/benches/autoattack_pytorch.py --run DIR --n 100 --eps 8/255 \
        --threads 2 --out aa_pytorch.json [--batch-size B] [--version standard]
        [--iters 100] [--clean-all] [--weights FILE] [--data-dir DIR]

Needs torch, torchattacks, safetensors, numpy and pillow. `ews attack` writes its own
figures to DIR/attack_autoattack.json (clean and robust accuracy, seconds, per member).
(The ews CPU backend parallelises with rayon: RAYON_NUM_THREADS sets its threads.)

How this matches ews
--------------------
- Model: DIR/config.toml names the architecture (`model`); the network is the one of
  `crates/ews-train/benches/step_pytorch.py` (imported from its path, not copied), which
  has our layer order and loads the PyTorch-named safetensors of `ews export`
  (crates/ews-models/src/persist.rs). Normalisation is inside the model as in ews: the
  config's `normalization`, else the dataset's (cifar10/cifar100 statistics, ImageNet
  statistics for image folders). Batch norm runs in evaluation mode (running statistics).
- Test set (crates/ews-train/src/trainer.rs `load_dataset`, crates/ews-data):
  `folder:ROOT` lists ROOT/val (or ROOT/test) per class, classes being the sorted
  sub-folders of ROOT/train (label = index), files sorted by name with extensions
  jpg/jpeg/png/JPEG/PNG; `cifar10`/`cifar100` read the binary test file under `data_dir`.
  With `test_limit = K` ews keeps a seeded subset: rand 0.9's
  `index::sample(StdRng::seed_from_u64(seed + 1), len, K)`, sorted. StdRng is ChaCha12
  seeded through PCG32; this file reimplements exactly that (and the algorithm choice of
  `index::sample`) to pick the same images. `ews attack --n N` then attacks the first N
  of that split. An image folder is ordered by class, so the first N images can all be of
  one class (the first 112 of /tmp/cifar10jpeg with test_limit 1000 are airplanes).
- Pixels: the image decoded to RGB, `v / 255` as float32, CHW (the evaluation loader's
  `Augmentation::None`, which leaves an image of the run's size untouched). Images of
  another size are refused rather than resized. JPEGs are decoded by Pillow
  (libjpeg-turbo) here and by the `image` crate (zune-jpeg) in ews; with chroma
  subsampling the two decoders give slightly different pixels, which flips a few
  borderline predictions (a wrn-16-1 run: 29.50% here and 29.30% from `ews eval` on 1000
  JPEGs, while ews itself gives 29.50% on the Pillow-decoded pixels, fed to it as a
  CIFAR-C .npy). PNG folders and CIFAR binaries decode identically on both sides.
- Batches: `--batch-size`, default the run's `eval_batch_size` as `ews attack`.

Checking that both sides compute the same function: the clean accuracy printed here on
the first N images must equal the `clean ...%` of `ews attack` (and its progress line
`clean accuracy: ...%`). `--clean-all` also reports the clean accuracy on the whole test
split, to compare with `ews eval --run DIR` (equal for lossless images; see JPEG above).
ews prints no logits of a run; `step_pytorch.py --check` compares logits of this network
with ours on random inputs (`ews bench --check-out`).

Differences to keep in mind when comparing timings (not changed here):
- torchattacks' AutoAttack builds APGD, APGD-T and FAB-T with their class defaults of
  10 iterations; the reference AutoAttack and ews use 100. `--iters 100` builds the
  standard ensemble from torchattacks' own APGD / APGDT / FAB / Square classes with 100
  iterations instead (same members, order, 9 target classes, 5000 Square queries).
- torchattacks' PGD reports the final iterate; ews' PGD counts a point as broken when any
  iterate misclassifies it, so ews' PGD robust accuracy can be lower.
- Only L-inf. The wall clocks include first-call start-up costs on both sides (the first
  member absorbs them). They start after the images are loaded; the `seconds` of ews'
  report also cover decoding the N images (small next to the attack).
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

STEP_PYTORCH = Path(__file__).resolve().parents[2] / "ews-train" / "benches" / "step_pytorch.py"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "JPEG", "PNG")
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "identity": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF


# ---------------------------------------------------------------------------------------
# rand 0.9's StdRng (ChaCha12) and `seq::index::sample`, to pick ews' `test_limit` subset.


class StdRng:
    """rand 0.9 `StdRng::seed_from_u64`: a ChaCha12 keystream (64-bit block counter from 0,
    nonce 0) keyed by eight PCG32 outputs, read as little-endian u32 words."""

    ROUNDS = 12

    def __init__(self, seed, rounds=ROUNDS):
        state = seed & MASK64
        key = []
        for _ in range(8):
            state = (state * 6364136223846793005 + 11634580027462260723) & MASK64
            xorshifted = (((state >> 18) ^ state) >> 27) & MASK32
            rot = state >> 59
            key.append(((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & MASK32)
        self.key = key
        self.rounds = rounds
        self.counter = 0
        self.words = []

    @classmethod
    def from_key_words(cls, key, rounds):
        rng = cls(0, rounds)
        rng.key = list(key)
        return rng

    def _block(self):
        def rotl(v, n):
            return ((v << n) | (v >> (32 - n))) & MASK32

        def quarter(x, a, b, c, d):
            x[a] = (x[a] + x[b]) & MASK32
            x[d] = rotl(x[d] ^ x[a], 16)
            x[c] = (x[c] + x[d]) & MASK32
            x[b] = rotl(x[b] ^ x[c], 12)
            x[a] = (x[a] + x[b]) & MASK32
            x[d] = rotl(x[d] ^ x[a], 8)
            x[c] = (x[c] + x[d]) & MASK32
            x[b] = rotl(x[b] ^ x[c], 7)

        start = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *self.key,
                 self.counter & MASK32, self.counter >> 32, 0, 0]
        x = list(start)
        for _ in range(self.rounds // 2):
            quarter(x, 0, 4, 8, 12)
            quarter(x, 1, 5, 9, 13)
            quarter(x, 2, 6, 10, 14)
            quarter(x, 3, 7, 11, 15)
            quarter(x, 0, 5, 10, 15)
            quarter(x, 1, 6, 11, 12)
            quarter(x, 2, 7, 8, 13)
            quarter(x, 3, 4, 9, 14)
        self.counter = (self.counter + 1) & MASK64
        return [(a + b) & MASK32 for a, b in zip(x, start)]

    def next_u32(self):
        if not self.words:
            self.words = self._block()[::-1]
        return self.words.pop()

    def range_inclusive(self, low, high):
        """`random_range(low..=high)` for u32: rand's single-sample Canon method (biased
        variant, the default without the `unbiased` feature)."""
        span = (high - low + 1) & MASK32
        if span == 0:
            return self.next_u32()
        product = self.next_u32() * span
        result, lo = product >> 32, product & MASK32
        if lo > ((-span) & MASK32):
            new_hi = (self.next_u32() * span) >> 32
            if lo + new_hi > MASK32:
                result += 1
        return low + result

    def uniform_below(self, length):
        """`Uniform::new(0, length).sample(..)` for u32: Lemire's method with rejection."""
        thresh = ((-length) & MASK32) % length
        while True:
            product = self.next_u32() * length
            if product & MASK32 >= thresh:
                return product >> 32


def sample_indices(rng, length, amount):
    """rand 0.9 `seq::index::sample(rng, length, amount)` for length below 2^32."""
    f32 = np.float32
    if amount < 163:
        j = int(length >= 500_000)
        m4 = f32((1.6, 8.0 / 45.0)[j]) * f32(amount)
        inplace = amount > 11 and f32(length) < (f32((10.0, 70.0 / 9.0)[j]) + m4) * f32(amount)
    else:
        j = int(length >= 500_000)
        inplace = f32(length) < f32((270.0, 330.0 / 9.0)[j]) * f32(amount)
        if not inplace:  # sample_rejection
            seen, out = set(), []
            for _ in range(amount):
                pos = rng.uniform_below(length)
                while pos in seen:
                    pos = rng.uniform_below(length)
                seen.add(pos)
                out.append(pos)
            return out
    if inplace:  # sample_inplace: partial Fisher-Yates
        indices = list(range(length))
        for i in range(amount):
            k = rng.range_inclusive(i, length - 1)
            indices[i], indices[k] = indices[k], indices[i]
        return indices[:amount]
    out = []  # sample_floyd
    for j in range(length - amount, length):
        t = rng.range_inclusive(0, j)
        if t in out:
            out[out.index(t)] = j
        out.append(t)
    return out


def check_rng():
    """The ChaCha core against the RFC 7539 / draft-nir test vector (ChaCha20, zero key),
    as rand_chacha's own tests, so a slip in this port cannot go unnoticed."""
    rng = StdRng.from_key_words([0] * 8, rounds=20)
    first = [rng.next_u32() for _ in range(4)]
    if first != [0xADE0B876, 0x903DF1A0, 0xE56A5D40, 0x28BD8653]:
        raise SystemExit("autoattack_pytorch.py: ChaCha self-test failed")


# ---------------------------------------------------------------------------------------
# The run: config, test split, model.


def parse_eps(text):
    """A number or a fraction like 8/255 (ews' `parse_eps`)."""
    num, slash, den = text.partition("/")
    value = float(num) / float(den) if slash else float(text)
    if not (value > 0 and np.isfinite(value)):
        raise SystemExit(f"--eps {text}: must be positive")
    return value


def test_split(config, data_dir):
    """(list of image loaders, labels, classes, default normalisation) of the run's test
    split after `test_limit`, in ews' order."""
    dataset = config["dataset"]
    if dataset.startswith("folder:"):
        root = Path(dataset[len("folder:"):])
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        eval_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if eval_dir is None:
            raise SystemExit(f"{root}: no val/ or test/ folder")
        items, labels = [], []
        for label, name in enumerate(classes):
            class_dir = eval_dir / name
            if not class_dir.is_dir():
                continue
            # Rust sorts the paths (same folder: byte order of the names).
            for entry in sorted(os.listdir(class_dir), key=os.fsencode):
                path = class_dir / entry
                if path.suffix[1:] in IMAGE_EXTENSIONS and path.is_file():
                    items.append(path)
                    labels.append(label)
        normalization = "imagenet"
    elif dataset in ("cifar10", "cifar100"):
        ten = dataset == "cifar10"
        folder, file = ("cifar-10-batches-bin", "test_batch.bin") if ten else ("cifar-100-binary", "test.bin")
        base = Path(data_dir or config.get("data_dir", "datasets"))
        path = next((d / file for d in (base / folder, base) if (d / file).is_file()), None)
        if path is None:
            raise SystemExit(f"{base}: no {file} (run from the folder ews was run in, or --data-dir)")
        record = 3073 if ten else 3074
        raw = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
        labels = raw[:, record - 3073].astype(np.int64).tolist()
        items = list(raw[:, record - 3072:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        classes = list(range(10 if ten else 100))
        normalization = dataset
    else:
        raise SystemExit(f"dataset {dataset}: only folder:ROOT, cifar10 and cifar100 are supported")
    limit = config.get("test_limit")
    if limit is not None and limit < len(items):
        seed = (int(config.get("seed", 0)) + 1) & MASK64
        picked = sorted(sample_indices(StdRng(seed), len(items), limit))
        items = [items[i] for i in picked]
        labels = [labels[i] for i in picked]
    return items, labels, classes, normalization


def load_images(items, size):
    """NCHW float32 in [0, 1]: RGB, v / 255."""
    from PIL import Image  # noqa: PLC0415

    out = np.empty((len(items), 3, size, size), dtype=np.float32)
    for i, item in enumerate(items):
        if isinstance(item, Path):
            with Image.open(item) as img:
                pixels = np.asarray(img.convert("RGB"))
        else:
            pixels = item
        if pixels.shape[:2] != (size, size):
            raise SystemExit(
                f"{item}: {pixels.shape[1]}x{pixels.shape[0]} pixels; this script handles only "
                f"images already at the run's size {size} (ews would resize them)"
            )
        out[i] = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(out)


def import_step_pytorch():
    spec = importlib.util.spec_from_file_location("step_pytorch", STEP_PYTORCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(config, weights, classes, normalization):
    step_pytorch = import_step_pytorch()
    model = step_pytorch.Network(config["model"], classes)
    mean, std = NORMALIZATION[normalization]
    with torch.no_grad():
        model.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
        model.std.copy_(torch.tensor(std).view(1, 3, 1, 1))
    step_pytorch.load_ews_weights(model, str(weights))  # strict: every tensor must match
    return model.eval()


# ---------------------------------------------------------------------------------------
# Attacks.


def batches(n, size):
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def correct_mask(model, x, y, batch_size):
    with torch.no_grad():
        preds = [model(x[s:e]).argmax(1) for s, e in batches(len(x), batch_size)]
    return torch.cat(preds) == y


def standard_members(model, eps, classes, iters, torchattacks):
    """The standard ensemble of torchattacks.AutoAttack with `iters` iterations for APGD,
    APGD-T and FAB-T (torchattacks' default is 10, the reference's 100)."""
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=iters, seed=0, loss="ce", n_restarts=1),
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=iters, seed=0, n_classes=classes, n_restarts=1),
        torchattacks.FAB(model, norm="Linf", eps=eps, steps=iters, seed=0, multi_targeted=True,
                         n_classes=classes, n_restarts=1),
        torchattacks.Square(model, norm="Linf", eps=eps, seed=0, n_queries=5000, n_restarts=1),
    ])


def time_members(ensemble):
    """Wraps each member's `forward` to add up its seconds; returns (names, seconds)."""
    names = [type(a).__name__ for a in ensemble.attacks]
    seconds = [0.0] * len(names)
    for i, attack in enumerate(ensemble.attacks):
        def timed(images, labels, _forward=attack.forward, _i=i):
            start = time.perf_counter()
            out = _forward(images, labels)
            seconds[_i] += time.perf_counter() - start
            return out
        attack.forward = timed
    return names, seconds


def run_autoattack(model, x, y, args, classes, torchattacks):
    if args.iters is None:
        attack = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps, version=args.version,
                                         n_classes=classes, seed=0)
        ensemble = attack._autoattack  # the MultiAttack inside (for per-member figures)
    else:
        if args.version != "standard":
            raise SystemExit("--iters builds the standard version only")
        attack = ensemble = standard_members(model, args.eps, classes, args.iters, torchattacks)
    names, seconds = time_members(ensemble)
    members = len(names)
    remaining = [0] * members  # points still correct after each member, summed over batches
    ensemble._accumulate_multi_atk_records = True
    start = time.perf_counter()
    adversarial = []
    for s, e in batches(len(x), args.batch_size):
        # [points, still correct after member 1, ...]; members after the one that broke
        # every point do not run and keep 0.
        ensemble._multi_atk_records = [0.0] * (members + 1)
        adversarial.append(attack(x[s:e], y[s:e]))
        remaining = [r + int(v) for r, v in zip(remaining, ensemble._multi_atk_records[1:])]
    wall = time.perf_counter() - start
    adversarial = torch.cat(adversarial)
    robust = correct_mask(model, adversarial, y, args.batch_size)
    linf = (adversarial - x).abs().flatten(1).max(1).values.max().item()
    per_member = [
        {"attack": name, "robust_accuracy": 100.0 * r / len(x), "seconds": t}
        for name, r, t in zip(names, remaining, seconds)
    ]
    return robust, wall, per_member, linf


def run_pgd(model, x, y, args, torchattacks):
    attack = torchattacks.PGD(model, eps=args.eps, alpha=args.eps / 4, steps=args.pgd_steps, random_start=True)
    torch.manual_seed(0)
    start = time.perf_counter()
    adversarial = torch.cat([attack(x[s:e], y[s:e]) for s, e in batches(len(x), args.batch_size)])
    wall = time.perf_counter() - start
    return correct_mask(model, adversarial, y, args.batch_size), wall


def percent(mask):
    return 100.0 * int(mask.sum()) / max(len(mask), 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="ews run folder (config.toml)")
    parser.add_argument("--weights", type=Path, help="default: RUN/pytorch.safetensors (ews export)")
    parser.add_argument("--n", type=int, default=100, help="the first N test images (as ews attack --n)")
    parser.add_argument("--eps", default="8/255", help="L-inf radius, a number or a fraction")
    parser.add_argument("--version", default="standard", choices=["standard", "plus", "rand"])
    parser.add_argument("--batch-size", type=int, help="default: the run's eval_batch_size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, help="APGD/FAB iterations (torchattacks' default: 10)")
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--skip-pgd", action="store_true")
    parser.add_argument("--clean-all", action="store_true", help="also the whole test split (= ews eval)")
    parser.add_argument("--data-dir", help="cifar10/cifar100 runs: override the config's data_dir")
    parser.add_argument("--out", type=Path, help="JSON report")
    args = parser.parse_args()
    args.eps = parse_eps(args.eps)

    import torchattacks  # noqa: PLC0415

    check_rng()
    torch.set_num_threads(args.threads)
    with open(args.run / "config.toml", "rb") as f:
        config = tomllib.load(f)
    weights = args.weights or args.run / "pytorch.safetensors"
    if not weights.is_file():
        raise SystemExit(
            f"{weights} is missing: run `ews export --run {args.run} --out {weights}` first "
            "(the run's best weights, as `ews attack` uses)"
        )
    args.batch_size = args.batch_size or int(config.get("eval_batch_size", 256))
    items, labels, classes, default_norm = test_split(config, args.data_dir)
    normalization = config.get("normalization") or default_norm
    size = config.get("image_size") or (224 if config["dataset"].startswith("folder:") else 32)
    model = build_model(config, weights, len(classes), normalization)

    n = min(args.n, len(items))
    x = load_images(items[:n], size)
    y = torch.tensor(labels[:n], dtype=torch.int64)
    report = {
        "run": str(args.run),
        "model": config["model"],
        "dataset": config["dataset"],
        "normalization": normalization,
        "n": n,
        "eps": args.eps,
        "version": args.version,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchattacks": torchattacks.__version__,
        "aa_iters": args.iters or "torchattacks default (10)",
    }
    print(f"{config['model']} on the first {n} test images of {config['dataset']}, "
          f"eps {args.eps:.6f}, {report['threads']} threads, torch {torch.__version__}, "
          f"torchattacks {torchattacks.__version__}", file=sys.stderr)

    if args.clean_all:
        all_correct = correct_mask(model, load_images(items, size), torch.tensor(labels), args.batch_size)
        report["clean_accuracy_all"] = percent(all_correct)
        report["test_images"] = len(items)
        print(f"clean accuracy on the whole test split: {report['clean_accuracy_all']:.2f}% "
              f"of {len(items)} (ews eval)")

    start = time.perf_counter()
    clean = correct_mask(model, x, y, args.batch_size)
    report["clean_seconds"] = time.perf_counter() - start
    report["clean_accuracy"] = percent(clean)
    print(f"clean accuracy: {report['clean_accuracy']:.2f}% ({int(clean.sum())}/{n})")

    robust, wall, members, linf = run_autoattack(model, x, y, args, len(classes), torchattacks)
    report["autoattack_robust_accuracy"] = percent(robust)
    report["autoattack_seconds"] = wall
    report["autoattack_members"] = members
    report["autoattack_max_perturbation"] = linf
    for m in members:
        print(f"  {m['attack']}: robust {m['robust_accuracy']:.2f}% ({m['seconds']:.1f} s)")
    print(f"autoattack ({args.version}): robust {report['autoattack_robust_accuracy']:.2f}% "
          f"in {wall:.1f} s (max |delta| {linf:.6f})")

    if not args.skip_pgd:
        robust, wall = run_pgd(model, x, y, args, torchattacks)
        report["pgd_steps"] = args.pgd_steps
        report["pgd_robust_accuracy"] = percent(robust)
        report["pgd_seconds"] = wall
        print(f"pgd{args.pgd_steps}: robust {report['pgd_robust_accuracy']:.2f}% in {wall:.1f} s")

    line = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
