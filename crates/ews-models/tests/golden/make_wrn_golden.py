"""Golden file for the WideResNet forward pass, computed with plain numpy.

Writes `wrn10_1.safetensors`: random weights of a WRN-10-1 (10 classes) under the
TRADES/AWP reference names (PyTorch layout: conv [out, in, k, k], fc [out, in], BN
buffers), and `wrn10_1_expected.safetensors` with the test inputs and expected logits:

- `golden.x`: input images in [0, 1], shape [4, 3, 8, 8]
- `golden.eval_logits`: evaluation mode (running statistics)
- `golden.train_logits`: training mode (batch statistics)
- `golden.mask.<block>`: a 0/1 channel mask on the input channels of each block's conv2
- `golden.subnet_logits`: evaluation mode with those masks applied

Normalisation inside the model uses the CIFAR-10 statistics (see `Normalization::cifar10`).

Run: pip install numpy safetensors && python3 make_wrn_golden.py
"""
import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(2022)
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2471, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)
EPS = 1e-5


def conv2d(x, w, stride):
    """Cross-correlation with zero padding k // 2, as torch.nn.functional.conv2d."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho = (h + 2 * p - k) // stride + 1
    wo = (wd + 2 * p - k) // stride + 1
    out = np.zeros((n, o, ho, wo), np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def bn(x, s, name, train):
    if train:
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
    else:
        mean, var = s[name + ".running_mean"], s[name + ".running_var"]
    shape = (1, -1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS) * s[name + ".weight"].reshape(shape) + s[
        name + ".bias"].reshape(shape)


relu = lambda v: np.maximum(v, 0)

# WRN-10-1: one block per group, widths 16, 32, 64; the first block keeps its shape
# (identity shortcut), the other two project with a 1x1 convShortcut.
blocks = [("block1.layer.0", 16, 16, 1), ("block2.layer.0", 16, 32, 2), ("block3.layer.0", 32, 64, 2)]
s = {}


def add_bn(name, c):
    s[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    s[name + ".bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    s[name + ".running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
    s[name + ".running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    s[name + ".num_batches_tracked"] = np.array(5, np.int64)


def add_conv(name, cin, cout, k):
    s[name + ".weight"] = rng.normal(0, np.sqrt(2.0 / (k * k * cout)), (cout, cin, k, k)).astype(np.float32)


add_conv("conv1", 3, 16, 3)
for name, cin, cout, stride in blocks:
    add_bn(name + ".bn1", cin)
    add_conv(name + ".conv1", cin, cout, 3)
    add_bn(name + ".bn2", cout)
    add_conv(name + ".conv2", cout, cout, 3)
    if cin != cout or stride != 1:
        add_conv(name + ".convShortcut", cin, cout, 1)
add_bn("bn1", 64)
s["fc.weight"] = rng.uniform(-0.125, 0.125, (10, 64)).astype(np.float32)
s["fc.bias"] = rng.uniform(-0.125, 0.125, 10).astype(np.float32)

masks = {}
for name, _, cout, _ in blocks:
    m = np.zeros(cout, np.float32)
    m[rng.choice(cout, int(np.ceil(0.7 * cout)), replace=False)] = 1
    masks[name] = m


def forward(x, train, use_masks):
    f = {k: v.astype(np.float64) for k, v in s.items()}
    out = conv2d((x - MEAN) / STD, f["conv1.weight"], 1)
    for name, _, _, stride in blocks:
        o = relu(bn(out, f, name + ".bn1", train))
        r = relu(bn(conv2d(o, f[name + ".conv1.weight"], stride), f, name + ".bn2", train))
        if use_masks:
            r = r * masks[name].reshape(1, -1, 1, 1)
        r = conv2d(r, f[name + ".conv2.weight"], 1)
        shortcut = name + ".convShortcut.weight"
        out = r + (conv2d(o, f[shortcut], stride) if shortcut in f else out)
    out = relu(bn(out, f, "bn1", train)).mean(axis=(2, 3))
    return (out @ f["fc.weight"].T + f["fc.bias"]).astype(np.float32)


x = rng.uniform(0, 1, (4, 3, 8, 8)).astype(np.float32)
golden = {
    "golden.x": x,
    "golden.eval_logits": forward(x, False, False),
    "golden.train_logits": forward(x, True, False),
    "golden.subnet_logits": forward(x, False, True),
}
for name, m in masks.items():
    golden["golden.mask." + name] = m
save_file(s, "wrn10_1.safetensors")
save_file(golden, "wrn10_1_expected.safetensors")
print("wrote wrn10_1.safetensors:", len(s), "weights; wrn10_1_expected.safetensors:", len(golden), "tensors")
