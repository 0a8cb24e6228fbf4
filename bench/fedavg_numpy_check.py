#!/usr/bin/env python3
"""Independent NumPy reimplementation of FedAvg (McMahan et al. 2017) on MNIST.

Cross-check for the Rust simulator's "rounds to 97% test accuracy" figures
(McMahan Table 1 setting: 2NN, C=0.1, E=1, B=10, 100 clients).

* Data: MNIST IDX gzip files, pixels x/255, no other normalisation.
* IID split: random permutation of the 60k training images, 600 per client.
  Optional pathological non-IID split (--split noniid): sort by label,
  200 shards of 300, 2 shards per client at random.
* Model 2NN: 784-200-200-10 MLP, ReLU, softmax cross-entropy, 199,210 params,
  PyTorch-default init (weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
* Each round: sample m=10 of 100 clients without replacement; each client runs
  E=1 epoch of plain SGD over its data in a fresh random order, minibatch B=10,
  gradient = batch mean; server takes the data-size-weighted average.
* Global model evaluated on the 10k test images after every round.

The 10 selected clients are trained simultaneously with batched (stacked)
float32 matmuls; this is mathematically identical to training them one after
another since each client starts from the same global weights and the clients
do not interact until averaging (all IID clients hold exactly 600 samples).

Only python3 + numpy; single-threaded BLAS (env vars set before importing numpy).
"""
import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import csv
import gzip
import hashlib
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "mnist"))
DEFAULT_OUT = os.path.join(HERE, "results", "numpy_check")

MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    name = os.path.basename(path)
    if name in MD5:
        got = hashlib.md5(raw).hexdigest()
        if got != MD5[name]:
            sys.exit(f"md5 mismatch for {path}: {got}")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    assert zero == 0 and dtype == 0x08, "expected unsigned-byte IDX"
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_mnist(d):
    xtr = read_idx(os.path.join(d, "train-images-idx3-ubyte.gz")).reshape(60000, 784)
    ytr = read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    xte = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz")).reshape(10000, 784)
    yte = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    xtr = (xtr.astype(np.float32) / np.float32(255.0))
    xte = (xte.astype(np.float32) / np.float32(255.0))
    return xtr, ytr, xte, yte


SIZES = [784, 200, 200, 10]


def init_params(rng):
    """PyTorch nn.Linear default: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    W stored as (fan_in, fan_out) so that forward is x @ W + b."""
    params = []
    for fin, fout in zip(SIZES[:-1], SIZES[1:]):
        bound = 1.0 / np.sqrt(fin)
        W = rng.uniform(-bound, bound, size=(fin, fout)).astype(np.float32)
        b = rng.uniform(-bound, bound, size=(fout,)).astype(np.float32)
        params += [W, b]
    return params


def n_params(params):
    return sum(p.size for p in params)


def evaluate(params, x, y, chunk=10000):
    W1, b1, W2, b2, W3, b3 = params
    correct = 0
    for s in range(0, x.shape[0], chunk):
        h = np.maximum(x[s:s + chunk] @ W1 + b1, 0)
        h = np.maximum(h @ W2 + b2, 0)
        logits = h @ W3 + b3
        correct += int((logits.argmax(1) == y[s:s + chunk]).sum())
    return correct / x.shape[0]


def local_sgd_batched(gparams, xs, ys, lr, batch, rng):
    """Run E=1 epoch of plain minibatch SGD for K clients at once.

    xs: (K, n, 784) float32, ys: (K, n) int. Every client starts from gparams
    and shuffles its own data independently. Returns list of stacked params
    with leading dim K.
    """
    K, n, _ = xs.shape
    lr = np.float32(lr)
    W1, b1, W2, b2, W3, b3 = [np.repeat(p[None], K, axis=0).copy() for p in gparams]
    # per-client fresh shuffle
    order = np.stack([rng.permutation(n) for _ in range(K)])  # (K, n)
    kidx = np.arange(K)[:, None]
    xs = xs[kidx, order]
    ys = ys[kidx, order]
    eye = np.eye(10, dtype=np.float32)
    nsteps = (n + batch - 1) // batch  # last partial batch kept (not hit for n=600, B=10)
    for s in range(nsteps):
        xb = xs[:, s * batch:(s + 1) * batch]          # (K, B, 784)
        yb = ys[:, s * batch:(s + 1) * batch]          # (K, B)
        B = xb.shape[1]
        z1 = np.matmul(xb, W1) + b1[:, None, :]
        h1 = np.maximum(z1, 0)
        z2 = np.matmul(h1, W2) + b2[:, None, :]
        h2 = np.maximum(z2, 0)
        z3 = np.matmul(h2, W3) + b3[:, None, :]
        z3 -= z3.max(axis=2, keepdims=True)
        e = np.exp(z3)
        p = e / e.sum(axis=2, keepdims=True)
        d3 = (p - eye[yb]) / np.float32(B)           # dL/dz3, mean over batch
        gW3 = np.matmul(h2.transpose(0, 2, 1), d3)
        gb3 = d3.sum(axis=1)
        d2 = np.matmul(d3, W3.transpose(0, 2, 1))
        d2 *= (z2 > 0)
        gW2 = np.matmul(h1.transpose(0, 2, 1), d2)
        gb2 = d2.sum(axis=1)
        d1 = np.matmul(d2, W2.transpose(0, 2, 1))
        d1 *= (z1 > 0)
        gW1 = np.matmul(xb.transpose(0, 2, 1), d1)
        gb1 = d1.sum(axis=1)
        W1 -= lr * gW1; b1 -= lr * gb1
        W2 -= lr * gW2; b2 -= lr * gb2
        W3 -= lr * gW3; b3 -= lr * gb3
    return [W1, b1, W2, b2, W3, b3]


def local_sgd_single(gparams, x, y, lr, batch, rng):
    """Same as local_sgd_batched for one client (used for unequal client sizes)."""
    out = local_sgd_batched(gparams, x[None], y[None], lr, batch, rng)
    return [p[0] for p in out]


def split_iid(rng, n_train, n_clients):
    perm = rng.permutation(n_train)
    return np.split(perm, n_clients)


def split_noniid(rng, ytr, n_clients, shards_per_client=2):
    n_shards = n_clients * shards_per_client
    idx = np.argsort(ytr, kind="stable")
    shards = np.split(idx, n_shards)
    sperm = rng.permutation(n_shards)
    return [np.concatenate([shards[j] for j in sperm[c * shards_per_client:(c + 1) * shards_per_client]])
            for c in range(n_clients)]


def run(args, lr, seed, data, split, curve_path):
    xtr, ytr, xte, yte = data
    rng = np.random.default_rng(seed)
    if split == "iid":
        clients = split_iid(rng, xtr.shape[0], args.clients)
    else:
        clients = split_noniid(rng, ytr, args.clients)
    # pre-gather client data
    cx = [xtr[c] for c in clients]
    cy = [ytr[c] for c in clients]
    sizes = np.array([len(c) for c in clients], dtype=np.float64)
    params = init_params(rng)
    assert n_params(params) == 199210, n_params(params)
    m = max(int(round(args.frac * args.clients)), 1)
    max_rounds = args.max_rounds if args.max_rounds else (200 if lr < 0.075 else 150)
    if split == "noniid" and not args.max_rounds:
        max_rounds = 400
    rounds_to = None
    best = 0.0
    t0 = time.time()
    curve = []
    for r in range(1, max_rounds + 1):
        sel = rng.choice(args.clients, size=m, replace=False)
        ns = sizes[sel]
        if np.all(ns == ns[0]):
            stacked = local_sgd_batched(params, np.stack([cx[k] for k in sel]),
                                        np.stack([cy[k] for k in sel]), lr, args.batch, rng)
            w = (ns / ns.sum()).astype(np.float32)
            params = [np.tensordot(w, p, axes=(0, 0)) for p in stacked]
        else:
            acc_p = [np.zeros_like(p) for p in params]
            for k, nk in zip(sel, ns):
                loc = local_sgd_single(params, cx[k], cy[k], lr, args.batch, rng)
                for a, p in zip(acc_p, loc):
                    a += np.float32(nk / ns.sum()) * p
            params = acc_p
        params = [p.astype(np.float32, copy=False) for p in params]
        acc = evaluate(params, xte, yte)
        best = max(best, acc)
        curve.append((r, acc, time.time() - t0))
        if rounds_to is None and acc >= args.target:
            rounds_to = r
        if args.verbose and (r % 10 == 0 or r == rounds_to):
            print(f"  lr={lr} seed={seed} round {r}: acc={acc:.4f} ({time.time() - t0:.1f}s)", flush=True)
        if rounds_to is not None and r >= rounds_to + args.extra:
            break
    secs = time.time() - t0
    with open(curve_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["round", "test_acc", "seconds"])
        for row in curve:
            wr.writerow([row[0], f"{row[1]:.4f}", f"{row[2]:.2f}"])
    return rounds_to, best, secs, len(curve)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--split", choices=["iid", "noniid"], default="iid")
    ap.add_argument("--lrs", default="0.2,0.1,0.05")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--max-rounds", type=int, default=0,
                    help="0 = 150 for lr>=0.1, 200 for lr=0.05 (400 for noniid)")
    ap.add_argument("--extra", type=int, default=5, help="rounds to continue after target hit")
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--frac", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    data = load_mnist(args.data)
    lrs = [float(s) for s in args.lrs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    csv_path = os.path.join(args.out, f"{args.split}.csv")
    rows = []
    T0 = time.time()
    with open(csv_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["lr", "seed", "rounds_to_97", "best_acc", "seconds"])
        for lr in lrs:
            for seed in seeds:
                curve_path = os.path.join(args.out, f"{args.split}_curve_lr{lr}_seed{seed}.csv")
                rt, best, secs, nr = run(args, lr, seed, data, args.split, curve_path)
                row = [lr, seed, rt if rt is not None else "NA", f"{best:.4f}", f"{secs:.1f}"]
                wr.writerow(row); f.flush()
                rows.append(row + [nr])
                print(f"lr={lr} seed={seed}: rounds_to_97={row[2]} best_acc={best:.4f} "
                      f"rounds_run={nr} {secs:.1f}s ({secs / nr:.3f}s/round)", flush=True)
    print()
    print(f"FedAvg 2NN MNIST {args.split}, C={args.frac}, E=1, B={args.batch}, K={args.clients}")
    print(f"{'lr':>6} {'seed':>4} {'rounds_to_97':>12} {'best_acc':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r[0]:>6} {r[1]:>4} {str(r[2]):>12} {r[3]:>8} {r[4]:>8}")
    print(f"total wall time {time.time() - T0:.1f}s; CSV: {csv_path}")


if __name__ == "__main__":
    main()
