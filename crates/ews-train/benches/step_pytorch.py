"""PyTorch side of `cargo xtask bench`: the training steps of `ews bench` in PyTorch eager.

Same models in the same layer order (PreAct ResNet-18 as Rice et al., WideResNet as the
TRADES/AWP reference, CIFAR ResNet-50 as torchvision's Bottleneck v1.5 with a 3x3 stem),
normalisation inside the model, random inputs in [0, 1] held on the device, labels
i mod classes, SGD (lr 0.1, momentum 0.9, nesterov, weight decay 5e-4). Steps:

- plain: training-mode forward, cross-entropy, backward, SGD step.
- ews: plus a subnet forward with batch statistics and BN momentum 0 (the official
  release's way), dropped channels masked (multiplied by 0) at the input of each block's
  middle convolution and dropped paths skipped, loss CE + KL(full || subnet) with the full
  side detached, batch-mean reduction. The subnet comes from `ews bench --subnet-out FILE`,
  so both sides use the same masks.
- pgdN: PGD-N (L-inf 8/255, step 2/255, uniform start) against the model in eval mode,
  then a plain step on x'.

Timing as `ews bench`: the first step (reported from process start, so interpreter, import
and CUDA start-up count, and alone), warm-up steps, then timed steps with one
synchronisation at the end. Prints one JSON line with the same keys as `ews bench`.

    python3 step_pytorch.py --model preact-resnet18 --step ews --subnet subnet.json \
        [--device cuda|cpu] [--batch 128] [--image-size 32] [--classes 100] [--warmup 3]
        [--steps 20] [--bf16] [--seed 0] [--out FILE]

`--check DIR` (with `--subnet`) instead proves that this model and subnet compute what ours
do: it loads the weights `ews bench --check-out DIR` exported (PyTorch names), runs the
full network and the subnet on the same inputs with batch statistics, and compares the
logits with ours (exit status 1 above the tolerance). Needs the `safetensors` package.
"""
import re
import argparse
import json
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def process_age_s():
    """Seconds since this process started (Linux), else since this module loaded."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - MODULE_LOADED


MODULE_LOADED = time.perf_counter()


def masked(x, keep):
    return x if keep is None else x * keep


class PreActBlock(nn.Module):
    """Pre-activation block (PreAct ResNet and WideResNet): o = relu(bn1(x)),
    y = conv2(relu(bn2(conv1(o)))) + (shortcut(o) or x)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x, choice=None):
        residual, skip, keep = choice or (True, True, None)
        o = F.relu(self.bn1(x))
        out = 0
        if residual:
            out = self.conv2(masked(F.relu(self.bn2(self.conv1(o))), keep))
        if skip:
            out = out + (self.shortcut(o) if self.shortcut is not None else x)
        return out


class Bottleneck(nn.Module):
    """torchvision's Bottleneck v1.5 (stride on the 3x3 convolution)."""

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x, choice=None):
        residual, skip, keep = choice or (True, True, None)
        out = 0
        if residual:
            r = masked(F.relu(self.bn1(self.conv1(x))), keep)
            r = F.relu(self.bn2(self.conv2(r)))
            out = self.bn3(self.conv3(r))
        if skip:
            out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return F.relu(out)


class Network(nn.Module):
    """Stem, residual blocks in network order, head; `forward(x, subnet)` runs a subnet."""

    def __init__(self, name, classes):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR100_STD).view(1, 3, 1, 1))
        blocks = []
        if name == "preact-resnet18":
            self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            cin = 64
            for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
                for j in range(2):
                    blocks.append(PreActBlock(cin, width, stride if j == 0 else 1))
                    cin = width
            self.stem_bn, self.head_bn = None, nn.BatchNorm2d(cin)
        elif name.startswith("wrn-"):
            depth, widen = (int(v) for v in name[4:].split("-"))
            n = (depth - 4) // 6
            self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            cin = 16
            for width, stride in [(16 * widen, 1), (32 * widen, 2), (64 * widen, 2)]:
                for j in range(n):
                    blocks.append(PreActBlock(cin, width, stride if j == 0 else 1))
                    cin = width
            self.stem_bn, self.head_bn = None, nn.BatchNorm2d(cin)
        elif name == "resnet50":
            self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            cin = 64
            for width, count, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
                for j in range(count):
                    blocks.append(Bottleneck(cin, width, stride if j == 0 else 1))
                    cin = width * 4
            self.stem_bn, self.head_bn = nn.BatchNorm2d(64), None
        else:
            raise SystemExit(f"step_pytorch.py: unknown model {name}")
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x, subnet=None):
        x = self.stem((x - self.mean) / self.std)
        if self.stem_bn is not None:
            x = F.relu(self.stem_bn(x))
        for i, block in enumerate(self.blocks):
            x = block(x, None if subnet is None else subnet[i])
        if self.head_bn is not None:
            x = F.relu(self.head_bn(x))
        return self.fc(x.mean(dim=(2, 3)))


def load_subnet(path, model, device):
    """Per block (residual kept, skip kept, channel mask or None) from `ews bench`'s JSON."""
    with open(path) as f:
        blocks = json.load(f)["blocks"]
    if len(blocks) != len(model.blocks):
        raise SystemExit(f"{path}: {len(blocks)} blocks, the model has {len(model.blocks)}")
    subnet = []
    for choice, block in zip(blocks, model.blocks):
        width = block.conv2.in_channels
        kept = choice["channels"][0][0]
        keep = None
        if len(kept) < width:
            keep = torch.zeros(1, width, 1, 1, device=device)
            keep[0, kept] = 1.0
        subnet.append((0 in choice["paths"], 1 in choice["paths"], keep))
    return subnet


def load_ews_weights(model, path):
    """Loads `ews export`-named weights (Rice et al.'s PreAct ResNet, torchvision's ResNet,
    the TRADES/AWP WideResNet) into this script's module names."""
    from safetensors.torch import load_file  # noqa: PLC0415

    state = load_file(path)
    block_key = re.compile(r"^(?:layer(\d+)\.(\d+)|block(\d+)\.layer\.(\d+))\.(.*)$")
    blocks = sorted(
        {tuple(int(g) for g in m.groups()[:4] if g is not None) for m in map(block_key.match, state) if m}
    )
    renamed = {}
    for key, value in state.items():
        m = block_key.match(key)
        if m:
            index = blocks.index(tuple(int(g) for g in m.groups()[:4] if g is not None))
            rest = m.group(5)
            rest = re.sub(r"^shortcut\.0\.", "shortcut.", rest)
            rest = re.sub(r"^convShortcut\.", "shortcut.", rest)
            rest = re.sub(r"^downsample\.", "shortcut.", rest)
            renamed[f"blocks.{index}.{rest}"] = value
            continue
        top, _, leaf = key.partition(".")
        target = {
            "conv1": "stem",
            "bn": "head_bn",
            "bn1": "stem_bn" if model.stem_bn is not None else "head_bn",
            "linear": "fc",
            "fc": "fc",
        }.get(top)
        if target is None:
            raise SystemExit(f"{path}: unexpected tensor {key}")
        renamed[f"{target}.{leaf}"] = value
    renamed["mean"], renamed["std"] = model.mean, model.std
    model.load_state_dict(renamed, strict=True)


def check(args, model, device):
    """Compares our full and subnet logits with this model's on the exported weights."""
    with open(os.path.join(args.check, "check.json")) as f:
        data = json.load(f)
    load_ews_weights(model, os.path.join(args.check, "weights.safetensors"))
    if not args.subnet:
        raise SystemExit("--check needs --subnet FILE (the same run's --subnet-out)")
    subnet = load_subnet(args.subnet, model, device)
    x = torch.tensor(data["input"], device=device).view(*data["shape"])
    model.train()
    set_bn_momentum(model, 0.0)
    worst = 0.0
    with torch.no_grad():
        for name, sub in (("full", None), ("subnet", subnet)):
            ours = torch.tensor(data[f"logits_{name}"], device=device).view(x.shape[0], -1)
            theirs = model(x, sub)
            diff = (ours - theirs).abs().max().item()
            scale = theirs.abs().max().item()
            print(f"{name}: max |ours - PyTorch| = {diff:.3g} (logit scale {scale:.3g})")
            worst = max(worst, diff / max(scale, 1.0))
    # CUDA convolutions in PyTorch default to TF32 (10-bit mantissa).
    tolerance = args.tolerance or (5e-2 if data["precision"] == "bf16" else 2e-2 if device == "cuda" else 1e-3)
    if worst > tolerance:
        raise SystemExit(f"logits differ by {worst:.3g} of their scale (tolerance {tolerance})")
    print("same function: ok")


def set_bn_momentum(model, momentum):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


def pgd(model, x, y, eps, step, steps):
    delta = (torch.rand_like(x) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="preact-resnet18")
    parser.add_argument("--step", default="plain")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--subnet")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (parameters stay f32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--check", help="folder written by `ews bench --check-out`")
    parser.add_argument("--tolerance", type=float, help="--check: largest logit difference / scale")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="torch.backends.cudnn.benchmark = True (time conv algorithms per shape)")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(args.seed)
    device = args.device
    model = Network(args.model, args.classes).to(device)
    if args.check:
        check(args, model, device)
        return
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.arange(args.batch, device=device) % args.classes
    subnet = None
    if args.step == "ews":
        if not args.subnet:
            raise SystemExit("--step ews needs --subnet FILE (from `ews bench --subnet-out`)")
        subnet = load_subnet(args.subnet, model, device)
    pgd_steps = int(args.step[3:]) if args.step.startswith("pgd") else 0
    if args.step not in ("plain", "ews") and pgd_steps <= 0:
        raise SystemExit(f"step {args.step}: expected plain, ews or pgdN")

    def autocast():
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.bf16)

    def step():
        inputs = x
        if pgd_steps:
            model.eval()
            with autocast():
                inputs = pgd(model, x, y, 8 / 255, 2 / 255, pgd_steps)
            model.train()
        with autocast():
            logits = model(inputs)
            loss = F.cross_entropy(logits, y)
            if subnet is not None:
                set_bn_momentum(model, 0.0)
                sub = model(inputs, subnet)
                set_bn_momentum(model, 0.1)
                loss = loss + F.kl_div(
                    F.log_softmax(sub.float(), 1), F.softmax(logits.detach().float(), 1), reduction="batchmean"
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    start = time.perf_counter()
    step()
    sync()
    first_only = time.perf_counter() - start
    first = process_age_s()
    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak = torch.cuda.max_memory_reserved()
        kind = "device memory reserved by PyTorch's caching allocator (peak)"
        name = torch.cuda.get_device_name()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        kind = "process peak resident memory"
        name = f"cpu, {torch.get_num_threads()} threads"
    report = {
        "backend": f"pytorch {torch.__version__}" + (" bf16 autocast" if args.bf16 else " fp32"),
        "device": name,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "model": args.model,
        "params": sum(p.numel() for p in model.parameters()),
        "step": args.step,
        "batch": args.batch,
        "image_size": args.image_size,
        "classes": args.classes,
        "subnet_pass": "masked",
        "precision": "bf16" if args.bf16 else "f32",
        "first_step_s": first,
        "first_step_only_s": first_only,
        "steps": args.steps,
        "step_s": seconds / args.steps,
        "images_per_s": args.batch * args.steps / seconds,
        "memory_kind": kind,
        "peak_memory_bytes": peak,
        "memory_trace": [],
        "memory_growth": None,
    }
    line = json.dumps(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line)
    print(line)


if __name__ == "__main__":
    main()
