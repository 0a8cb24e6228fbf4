#!/usr/bin/env python3
"""PyTorch CPU reference for the layer-stack benchmark (`cargo bench -p fedsim-nn --bench stack`).

Builds the same networks as fedsim's `cnn_cifar` and `resnet8_gn` presets in `torch.nn`, on one
thread (`torch.set_num_threads(1)`), and times the same cases on random data: a training step is
forward + cross-entropy + backward (gradients written, no optimiser step), an evaluation is a
forward pass and the loss on a 500-sample chunk. Throughput is reported in samples/s and in GFLOP/s
counted as fedsim counts them (multiply-adds of the conv and dense layers x 2; a training step is 3x
the forward FLOPs minus the first layer's input gradient), so the two tables compare directly.
Each case runs in PyTorch's default memory format (NCHW) and in `channels_last` (oneDNN's faster
blocked path for many CPU convolutions); the ratio is against the faster of the two.

    python3 bench/torch_stack.py                          # PyTorch only
    cargo bench -p fedsim-nn --bench stack | tee /tmp/fedsim_stack.txt
    python3 bench/torch_stack.py --fedsim /tmp/fedsim_stack.txt   # plus the fedsim / PyTorch ratio

Runs only when torch is importable; otherwise prints why it skipped and exits 0.
"""

import argparse
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the machine
    print("torch_stack.py: skipped: torch is not importable (pip install torch to run it)")
    sys.exit(0)


def cnn_cifar():
    """fedsim preset `cnn_cifar`: 2 x (conv3x3 32, pad 1 -> ReLU -> max-pool 2) -> 256 -> 64 -> 10."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2048, 256), nn.ReLU(),
        nn.Linear(256, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


class Block(nn.Module):
    """fedsim's residual basic block: conv3x3 (stride) -> GN(2) -> ReLU -> conv3x3 -> GN(2), plus the
    identity or a bias-free 1x1 projection, then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(2, cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(2, cout),
        )
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride, bias=False)
            if (cin != cout or stride != 1) else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


def resnet8_gn():
    """fedsim preset `resnet8_gn`: conv3x3 16 -> GN -> ReLU, blocks of 16, 32 (stride 2), 64
    (stride 2), global average pooling, dense 10."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.GroupNorm(2, 16), nn.ReLU(),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def forward_flops(model, shape):
    """Forward FLOPs per sample of the conv and dense layers (2 x multiply-adds), and the first such
    layer's share (its input gradient is not computed in training), as fedsim counts them."""
    counts = []

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
            counts.append(2.0 * k * out.shape[1] * out.shape[2] * out.shape[3])
        elif isinstance(mod, nn.Linear):
            counts.append(2.0 * mod.in_features * mod.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return sum(counts), counts[0]


def measure(run, run_s, repeats):
    """Samples per call: median of `repeats` runs of about `run_s` seconds (after calibration)."""
    steps, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        t = time.perf_counter() - t0
        if t >= run_s / 4:
            break
        steps *= 2
    steps = max(1, int(steps * run_s / t))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def fedsim_rates(path):
    """samples/s per case from the markdown table `cargo bench -p fedsim-nn --bench stack` prints."""
    rates = {}
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.startswith("| ") and not line.startswith("| case")]
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7:
            try:
                rates[cells[0]] = float(cells[6])
            except ValueError:
                pass
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fedsim", help="output of `cargo bench -p fedsim-nn --bench stack`")
    ap.add_argument("--repeats", type=int, default=int(os.environ.get("REPEATS", 9)))
    ap.add_argument("--run-ms", type=float, default=float(os.environ.get("RUN_MS", 300)))
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(7)
    shape = (3, 32, 32)
    cases = [
        ("cnn_cifar train B=16", cnn_cifar, 16, True),
        ("cnn_cifar train B=32", cnn_cifar, 32, True),
        ("resnet8_gn train B=32", resnet8_gn, 32, True),
        ("cnn_cifar eval 500", cnn_cifar, 500, False),
        ("resnet8_gn eval 500", resnet8_gn, 500, False),
    ]
    ours = fedsim_rates(args.fedsim) if args.fedsim else {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, "
          f"mkldnn {torch.backends.mkldnn.is_available()}; load average {load:.2f} at start")
    print()
    print("| case | PyTorch samples/s NCHW | channels_last | PyTorch GFLOP/s (best; fedsim's "
          "count) | fedsim samples/s | fedsim / PyTorch (best) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make, batch, train in cases:
        rates = []
        for channels_last in (False, True):
            model = make()
            fwd, first = forward_flops(model, shape)
            flops = 3 * fwd - first if train else fwd
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)
            pool = [(torch.rand(batch, *shape).contiguous(memory_format=fmt),
                     torch.randint(0, 10, (batch,)))
                    for _ in range(max(2, min(64, -(-2048 // batch))))]
            state = {"i": 0}

            def step():
                x, y = pool[state["i"]]
                state["i"] = (state["i"] + 1) % len(pool)
                if train:
                    model.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), y).backward()
                else:
                    with torch.no_grad():
                        F.cross_entropy(model(x), y)

            model.train(train)
            rates.append(measure(step, args.run_ms / 1e3, args.repeats) * batch)
        best = max(rates)
        mine = ours.get(name)
        ratio = f"{mine / best:.2f}x" if mine else "-"
        mine_s = f"{mine:.0f}" if mine else "-"
        print(f"| {name} | {rates[0]:.0f} | {rates[1]:.0f} | {best * flops / 1e9:.1f} | {mine_s} "
              f"| {ratio} |")


if __name__ == "__main__":
    main()
