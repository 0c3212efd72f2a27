"""PyTorch's side of `cargo bench -p ews-models --bench alexnet_forward`: torchvision's
AlexNet (random weights) on 31 random frames at 224 px, stage by stage, best of 5.

    python3 crates/ews-models/benches/alexnet_forward_pytorch.py [--threads 2] [--batch 31]
"""
import argparse
import time

import torch
import torchvision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=31)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = torchvision.models.alexnet().eval()
    f, c = model.features, model.classifier
    x = torch.rand(args.batch, 3, args.size, args.size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def report(name, stage, value):
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            stage(value)
            times.append(time.perf_counter() - start)
        print(f"  {name:<22} {min(times) * 1e3:8.2f} ms")
        return stage(value), min(times)

    print(f"torchvision AlexNet forward, batch {args.batch}, {args.size} px, "
          f"{args.threads} threads, best of {args.runs}:")
    with torch.no_grad():
        model((x - mean) / std)  # warm-up
        h, _ = report("normalise", lambda v: (v - mean) / std, x)
        h, _ = report("conv1 + relu", lambda v: f[1](f[0](v)), h)
        h, _ = report("maxpool 1", f[2], h)
        h, _ = report("conv2 + relu", lambda v: f[4](f[3](v)), h)
        h, _ = report("maxpool 2", f[5], h)
        h, _ = report("conv3 + relu", lambda v: f[7](f[6](v)), h)
        h, _ = report("conv4 + relu", lambda v: f[9](f[8](v)), h)
        h, _ = report("conv5 + relu", lambda v: f[11](f[10](v)), h)
        h, _ = report("maxpool 3 + avgpool", lambda v: model.avgpool(f[12](v)), h)
        h = torch.flatten(h, 1)
        h, _ = report("fc1 + relu", lambda v: c[2](c[1](v)), h)
        h, _ = report("fc2 + relu", lambda v: c[5](c[4](v)), h)
        report("fc3", c[6], h)
        _, best = report("whole forward", lambda v: model((v - mean) / std), x)
    print(f"  {args.batch / best:.1f} images/s")


if __name__ == "__main__":
    main()
