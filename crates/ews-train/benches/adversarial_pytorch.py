"""PyTorch side of the adversarial benchmark (BENCHMARKS.md, "Adversarial training and
evaluation"): the same work as

    ews train --model preact-resnet18 --adversarial pgd --batch-size 128 ...
    ews attack --attack pgd20 / --attack autoattack --n N

on the same kind of inputs (32x32, 10 classes, inputs in [0, 1], normalisation inside the model).

- PGD-10 AT step: PGD-10 (eps 8/255, step 2/255, uniform start) against the model with batch
  norm in evaluation mode, then a training-mode forward on x', cross-entropy, backward and
  SGD (momentum 0.9, nesterov, weight decay 5e-4); batch 128.
- PGD-20 evaluation on N images (step eps/4), batch 256.
- AutoAttack 'standard' on N images when the `autoattack` package is importable; otherwise
  the cost of one APGD run: 100 input-gradient evaluations per batch (labelled as such).

Prints one JSON object. Usage:
    python3 adversarial_pytorch.py [--device cuda|cpu] [--batch 128] [--steps 20] [--n 512]
        [--eval-batch 256]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

# The models and PGD shared with `cargo xtask bench` (same folder).
from step_pytorch import Network, pgd


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--eval-batch", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = args.device
    bs, eb = args.batch, args.eval_batch
    model = Network("preact-resnet18", 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    eps, step = 8 / 255, 2 / 255
    x = torch.rand(bs, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (bs,), device=device)

    def at_step():
        model.eval()
        x_adv = pgd(model, x, y, eps, step, 10)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    first, _ = timed(at_step, device)
    times = [timed(at_step, device)[0] for _ in range(args.steps)]
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "batch": bs,
        "pgd10_at_step_first_s": first,
        "pgd10_at_images_per_s": bs / statistics.median(times),
    }

    model.eval()
    xs = torch.rand(args.n, 3, 32, 32, device=device)
    with torch.no_grad():
        ys = model(xs).argmax(1)

    def pgd20():
        right = 0
        for i in range(0, args.n, eb):
            adv = pgd(model, xs[i : i + eb], ys[i : i + eb], eps, eps / 4, 20)
            with torch.no_grad():
                right += (model(adv).argmax(1) == ys[i : i + eb]).sum().item()
        return right

    if device == "cuda":
        pgd20()  # warm-up
    seconds, _ = timed(pgd20, device)
    result["pgd20_seconds"] = seconds
    result["pgd20_images_per_s"] = args.n / seconds
    try:
        from autoattack import AutoAttack  # noqa: PLC0415

        adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", verbose=False, device=device)
        seconds, _ = timed(lambda: adversary.run_standard_evaluation(xs, ys, bs=eb), device)
        result["autoattack_seconds"] = seconds
    except ImportError:

        def apgd_cost():
            for i in range(0, args.n, eb):
                xb = xs[i : i + eb].clone().requires_grad_(True)
                for _ in range(100):
                    loss = F.cross_entropy(model(xb), ys[i : i + eb], reduction="none").sum()
                    torch.autograd.grad(loss, xb)

        seconds, _ = timed(apgd_cost, device)
        result["apgd_cost_seconds"] = seconds
        result["autoattack"] = "package not installed; timed 100 input gradients per batch instead"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
