"""ImageNet-P with torchvision's AlexNet in PyTorch on the CPU, timed: the reference
`test.py -m alexnet` loop (one video of frames per forward pass, ToTensor + Normalize)
over `.npy` sequences, the PyTorch side of `ews alexnet --imagenet-p` in BENCHMARKS.md.

    python3 alexnet_p_pytorch.py --dir DIR/rotate --weights alexnet-owt-7be5be79.pth [--threads N]

Prints frames per second and the flip probability (consecutive frames, difficulty 1).
"""
import argparse
import glob
import time

import numpy as np
import torch
import torchvision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, help="<perturbation> folder of <class>/<video>.npy")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net = torchvision.models.alexnet(weights=None)
    net.load_state_dict(torch.load(args.weights))
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    files = sorted(glob.glob(f"{args.dir}/*/*.npy"))
    frames, flips, pairs = 0, 0, 0
    start = time.perf_counter()
    with torch.no_grad():
        for path in files:
            x = torch.from_numpy(np.load(path)).permute(0, 3, 1, 2).float() / 255
            pred = net((x - mean) / std).argmax(1)
            flips += int((pred[1:] != pred[:-1]).sum())
            pairs += len(pred) - 1
            frames += len(pred)
    seconds = time.perf_counter() - start
    print(f"{len(files)} videos, {frames} frames in {seconds:.2f} s: {frames / seconds:.1f} frames/s; "
          f"FP {100 * flips / pairs:.2f}% (threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
