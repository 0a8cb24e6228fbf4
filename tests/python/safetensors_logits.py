#!/usr/bin/env python3
"""Checks a fedsim model exported as safetensors against an independent forward pass.

Usage: safetensors_logits.py DIR

DIR holds what tests/model_file_python.rs writes:
  model.safetensors  the parameters, in PyTorch's names, shapes and element order
  batch.safetensors  `x` (N x C x H x W, or N x F) and `logits` (N x classes) computed by fedsim
  arch.json          {"input": [C, H, W] or [F], "layers": [...]} in the scenario's canonical form

The script rebuilds the architecture in NumPy from the layer list (its own implementation of every
layer, written from PyTorch's definitions), loads the parameters with the `safetensors` package and
compares its logits with fedsim's to 1e-5. When torch is importable it also builds the equivalent
`torch.nn.Sequential`, loads the file with `load_state_dict(strict=True)` and compares again.
Exit status 0 on agreement; the last line of output says which checks ran.
"""

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

TOL = 1e-5


def opts(layer):
    """(kind, options) of a layer in canonical form: "relu" or {"conv2d": {...}}."""
    if isinstance(layer, str):
        return layer, {}
    (kind, o), = layer.items()
    return kind, o


def conv2d_np(x, w, b, stride, pad):
    n, cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, cout, ho, wo), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def pool_np(x, size, stride, reduce):
    n, c, h, w = x.shape
    ho = (h - size) // stride + 1
    wo = (w - size) // stride + 1
    windows = np.stack(
        [x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
         for i in range(size) for j in range(size)])
    return reduce(windows, axis=0)


def padding_of(o, k):
    p = o.get("padding", 0)
    return (k - 1) // 2 if p == "same" else int(p)


class NumpyNet:
    """A forward pass over parameters `params` (name -> array), from the canonical layer list."""

    def __init__(self, layers, params):
        self.layers = layers
        self.params = params
        self.used = set()

    def p(self, name):
        self.used.add(name)
        return self.params[name].astype(np.float64)

    def run(self, layers, x, prefix):
        for i, layer in enumerate(layers):
            x = self.layer(layer, x, f"{prefix}{i}")
        return x

    def layer(self, layer, x, name):
        kind, o = opts(layer)
        if kind == "conv2d":
            w = self.p(f"{name}.weight")
            b = self.p(f"{name}.bias") if o.get("bias", True) else None
            k = w.shape[2]
            return conv2d_np(x, w, b, int(o.get("stride", 1)), padding_of(o, k))
        if kind == "relu":
            return np.maximum(x, 0.0)
        if kind in ("max_pool", "avg_pool"):
            size = int(o["size"])
            stride = int(o.get("stride", size))
            return pool_np(x, size, stride, np.max if kind == "max_pool" else np.mean)
        if kind == "global_avg_pool":
            return x.mean(axis=(2, 3))
        if kind == "flatten":
            return x.reshape(x.shape[0], -1)
        if kind == "dropout":
            return x
        if kind == "dense":
            w = self.p(f"{name}.weight")
            y = x.reshape(x.shape[0], -1) @ w.T
            if o.get("bias", True):
                y = y + self.p(f"{name}.bias")
            return y
        if kind == "group_norm":
            g = int(o["groups"])
            eps = float(o.get("eps", 1e-5))
            n, c = x.shape[:2]
            xs = x.reshape(n, g, -1)
            mean = xs.mean(axis=2, keepdims=True)
            var = xs.var(axis=2, keepdims=True)
            y = ((xs - mean) / np.sqrt(var + eps)).reshape(x.shape)
            shape = (1, c) + (1,) * (x.ndim - 2)
            return y * self.p(f"{name}.weight").reshape(shape) + self.p(f"{name}.bias").reshape(shape)
        if kind == "residual":
            body = self.run(o["layers"], x, f"{name}.body.")
            if "shortcut" in o:
                # The block's own shortcut layers, e.g. conv1x1 stride 2 -> group_norm.
                return body + self.run(o["shortcut"], x, f"{name}.shortcut.")
            key = f"{name}.shortcut.weight"
            if key not in self.params:
                return body + x
            w = self.p(key)
            if w.ndim == 4:
                stride = x.shape[2] // body.shape[2] if body.shape[2] else 1
                return body + conv2d_np(x, w, None, stride, 0)
            return body + x.reshape(x.shape[0], -1) @ w.T
        raise SystemExit(f"unknown layer kind {kind!r}")


def torch_net(layers, input_shape):
    """The same architecture as torch modules, named like PyTorch's nn.Sequential."""
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body = body
            if shortcut is not None:
                self.shortcut = shortcut
            self.has_shortcut = shortcut is not None

        def forward(self, x):
            s = self.shortcut(x) if self.has_shortcut else x
            return self.body(x) + s

    class GlobalAvgPool(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    def shape_after(seq, shape):
        with torch.no_grad():
            return tuple(seq(torch.zeros((1,) + shape)).shape[1:])

    def build(layer_list, shape):
        mods = []
        for layer in layer_list:
            kind, o = opts(layer)
            if kind == "conv2d":
                k = int(o["kernel"])
                m = nn.Conv2d(shape[0], int(o["out"]), k, stride=int(o.get("stride", 1)),
                              padding=padding_of(o, k), bias=o.get("bias", True))
            elif kind == "relu":
                m = nn.ReLU()
            elif kind == "max_pool":
                m = nn.MaxPool2d(int(o["size"]), int(o.get("stride", o["size"])))
            elif kind == "avg_pool":
                m = nn.AvgPool2d(int(o["size"]), int(o.get("stride", o["size"])))
            elif kind == "global_avg_pool":
                m = GlobalAvgPool()
            elif kind == "flatten":
                m = nn.Flatten()
            elif kind == "dropout":
                m = nn.Dropout(float(o["p"]))
            elif kind == "dense":
                m = nn.Linear(int(np.prod(shape)), int(o["units"]), bias=o.get("bias", True))
            elif kind == "group_norm":
                m = nn.GroupNorm(int(o["groups"]), shape[0], eps=float(o.get("eps", 1e-5)))
            elif kind == "residual":
                body = build(o["layers"], shape)
                out = shape_after(body, shape)
                shortcut = None
                if "shortcut" in o:
                    shortcut = build(o["shortcut"], shape)
                elif out != shape:
                    if len(shape) == 3:
                        stride = shape[1] // out[1]
                        shortcut = nn.Conv2d(shape[0], out[0], 1, stride=stride, bias=False)
                    else:
                        shortcut = nn.Linear(shape[0], out[0], bias=False)
                m = Residual(body, shortcut)
            else:
                raise SystemExit(f"unknown layer kind {kind!r}")
            mods.append(m)
            shape = shape_after(nn.Sequential(*mods[-1:]), shape)
        return nn.Sequential(*mods)

    return build(layers, tuple(input_shape))


def main():
    d = Path(sys.argv[1])
    arch = json.loads((d / "arch.json").read_text())
    params = load_file(str(d / "model.safetensors"))
    batch = load_file(str(d / "batch.safetensors"))
    x, want = batch["x"].astype(np.float64), batch["logits"].astype(np.float64)

    net = NumpyNet(arch["layers"], params)
    got = net.run(arch["layers"], x, "")
    unused = set(params) - net.used
    if unused:
        raise SystemExit(f"tensors the architecture does not use: {sorted(unused)}")
    err = float(np.max(np.abs(got - want)))
    print(f"numpy: max |logit difference| = {err:.3g}")
    if not err <= TOL:
        raise SystemExit(f"numpy logits differ from fedsim's by {err} (> {TOL})")
    checks = ["numpy"]

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        from safetensors.torch import load_file as load_torch
        model = torch_net(arch["layers"], arch["input"]).double()
        state = {k: v.double() for k, v in load_torch(str(d / "model.safetensors")).items()}
        model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            t = model(torch.from_numpy(x)).numpy()
        err = float(np.max(np.abs(t - want)))
        print(f"torch {torch.__version__}: max |logit difference| = {err:.3g}")
        if not err <= TOL:
            raise SystemExit(f"torch logits differ from fedsim's by {err} (> {TOL})")
        checks.append("torch")
    print("checked: " + ", ".join(checks))


if __name__ == "__main__":
    main()
