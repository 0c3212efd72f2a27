"""Golden files for AlexNet's forward pass and for reading torchvision weight files.

A narrow AlexNet with torchvision's exact layer structure (`torchvision.models.AlexNet`:
the same `features.N` / `classifier.N` indices, kernels, strides, paddings, pools and the
adaptive 6 x 6 average pool), widths 4-8-8-8-8, 16 hidden units and 10 classes, with
random weights. Its state dict is saved twice, as torchvision's weight files come:

- `alexnet_tiny.pth`: PyTorch's zip format (`alexnet-owt-7be5be79.pth`, torchvision >= 0.13);
- `alexnet_tiny_legacy.pth`: the legacy format (`alexnet-owt-4df8aa71.pth`, which the
  ImageNet-P reference `test.py` loads);

and `alexnet_tiny_expected.json` holds:

- `logits`: per input size, the batch and the logits in evaluation mode, for a 224 x 224
  batch (features end at 6 x 6) and a 100 x 100 one (features end at 2 x 2, so the
  adaptive pool repeats cells); inputs are a formula the test rebuilds, in [0, 1], and are
  normalised with torchvision's ImageNet statistics before the network, as the reference
  evaluation does;
- `imagenet_p`: the net's flip probability and top-5 distance on formula-made frame
  sequences (see `imagenet_p_scores`).

Run: pip install torch numpy scipy && python3 make_alexnet_golden.py
"""
import json
import os
import sys

import numpy as np
import torch
from torch import nn

WIDTHS = (4, 8, 8, 8, 8)
HIDDEN = 16
CLASSES = 10
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class TinyAlexNet(nn.Module):
    """torchvision.models.AlexNet with its widths as parameters."""

    def __init__(self):
        super().__init__()
        a, b, c, d, e = WIDTHS
        self.features = nn.Sequential(
            nn.Conv2d(3, a, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(a, b, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(b, c, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, d, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(d, e, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(e * 6 * 6, HIDDEN), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(inplace=True),
            nn.Linear(HIDDEN, CLASSES),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def pattern(n, size):
    """Deterministic inputs in [0, 1]: the test computes the same formula."""
    i = torch.arange(n * 3 * size * size, dtype=torch.float64)
    return (((i * 7919) % 1009) / 1008).float().view(n, 3, size, size)


def frames(video, count, size=64):
    """Deterministic uint8 frames (count x size x size x 3, as ImageNet-P's .npy): one base
    picture per video and a frame-dependent change. The test computes the same formula."""
    i = np.arange(size * size * 3, dtype=np.int64)
    out = []
    for f in range(count):
        base = (i * 7919 + video * 104729) % 1009 * 255 // 1008
        change = (i * 31 + f * 17 * (video + 1)) % 97
        out.append(((base + change) % 256).astype(np.uint8).reshape(size, size, 3))
    return np.stack(out)


def imagenet_p_scores(net):
    """FP and T5D of the tiny net on two videos of 5 frames, for a noise perturbation
    (every frame against the first) and a motion one (consecutive frames, difficulty 1, and
    frames 2 apart, difficulty 2), by the reference formulas (make_imagenet_p_golden.py,
    hendrycks/robustness ImageNet-P/test.py), frames fed as test.py does: ToTensor, then
    the ImageNet normalisation."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "../../../ews-train/tests/golden"))
    from make_imagenet_p_golden import flip_prob, ranking_dist
    from scipy.stats import rankdata

    predictions, ranks = [], []
    with torch.no_grad():
        for v in range(2):
            x = torch.from_numpy(frames(v, 5)).permute(0, 3, 1, 2).float() / 255
            logits = net((x - MEAN) / STD).numpy()
            predictions.append(logits.argmax(1))
            ranks.append([np.uint16(rankdata(-f, method="ordinal")) for f in logits])
    ranks = np.asarray(ranks)
    out = {}
    for name, noise, difficulty in [("noise", True, 1), ("motion", False, 1), ("motion_d2", False, 2)]:
        out[name] = {
            "flip_probability": float(flip_prob(predictions, noise, difficulty)),
            "top5_distance": float(ranking_dist(ranks, noise, difficulty)),
        }
    return out


def main():
    torch.manual_seed(2019)
    net = TinyAlexNet().eval()
    # Larger weights than the default init, so that every layer's ReLUs matter.
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    state = net.state_dict()
    torch.save(state, "alexnet_tiny.pth")
    torch.save(state, "alexnet_tiny_legacy.pth", _use_new_zipfile_serialization=False)
    expected = {}
    with torch.no_grad():
        for n, size in [(2, 224), (1, 100)]:
            x = pattern(n, size)
            logits = net((x - MEAN) / STD)
            expected.setdefault("logits", {})[str(size)] = {
                "batch": n, "logits": logits.flatten().tolist()}
    expected["imagenet_p"] = imagenet_p_scores(net)
    with open("alexnet_tiny_expected.json", "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
