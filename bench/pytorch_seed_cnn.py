"""PyTorch measuring stick for `fergpu bench` and `fergpu profile` (never a dependency of
fergpu).

Trains the notebook's seed CNN, the MLP, or fergpu's `vgg` and `compact` presets (the same
layers: 3x3 "same" convolutions with batch norm, dropout 0.5) on random 48x48 data with Adam
1e-3 and prints training and evaluation images/s, plus (for the CNN) the second conv's
forward GFLOP/s, so the ratio to `fergpu bench` can be taken in the same sitting. `--epoch`
times one FER2013-sized training epoch (28,709 images) end to end instead of `--steps`.
The optimizer is fergpu's default exactly: torch.optim.Adam's formulas with
eps 1e-7 (fergpu's --adam-eps default).

    python3 bench/pytorch_seed_cnn.py --threads 2 --batch 32 --steps 30
    python3 bench/pytorch_seed_cnn.py --device cuda --batch 32 --steps 300 [--torch-defaults]
    python3 bench/pytorch_seed_cnn.py --device cuda --model vgg --batch 64 --steps 100
    python3 bench/pytorch_seed_cnn.py --device cuda --batch 32 --epoch

On CUDA, fp32 is strict (TF32 off) unless --torch-defaults leaves PyTorch's own settings.
"""
import argparse
import time

import torch
import torch.nn as nn


def seed_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(256, 64), nn.SELU(), nn.Linear(64, 7))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(2304, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 7))


def bn_stages(widths):
    """[conv 3x3 same -> batch norm -> relu] x 2 per width, each stage ending in a 2x2 pool
    (48 -> 24 -> 12 -> 6 -> 3), as fergpu's presets build them."""
    layers, c = [], 1
    for w in widths:
        for _ in range(2):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        layers.append(nn.MaxPool2d(2))
    return layers


def vgg():
    return nn.Sequential(
        *bn_stages([64, 128, 256, 512]), nn.Flatten(),
        nn.Linear(512 * 3 * 3, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 7))


def compact():
    return nn.Sequential(
        *bn_stages([32, 64, 128, 256]), nn.Flatten(),
        nn.Linear(256 * 3 * 3, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, 7))


MODELS = {"cnn": seed_cnn, "mlp": mlp, "vgg": vgg, "compact": compact}

# Images in FER2013's Training split: what one epoch trains on.
FER2013_TRAINING = 28709


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--model", default="cnn", choices=sorted(MODELS))
    ap.add_argument("--epoch", action="store_true",
                    help="time one FER2013-sized epoch (28,709 images) instead of --steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--torch-defaults", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not a.torch_defaults:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    if a.epoch:
        a.steps = -(-FER2013_TRAINING // a.batch)
    net = MODELS[a.model]().to(a.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    x = torch.rand(a.steps + 3, a.batch, 1, 48, 48, device=a.device)
    y = torch.randint(0, 7, (a.steps + 3, a.batch), device=a.device)
    lossf = nn.CrossEntropyLoss()

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(x[i]), y[i])
        loss.backward()
        opt.step()
        return loss

    for i in range(3):
        step(i)
    sync(a.device)
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(3 + i)
    sync(a.device)
    dt = time.perf_counter() - t0
    print(f"pytorch train {a.model} b{a.batch}: {a.steps * a.batch / dt:.1f} img/s "
          f"({dt / a.steps * 1e3:.2f} ms/step, {a.threads} threads, {torch.__version__})")
    if a.epoch:
        print(f"pytorch epoch {a.model} b{a.batch}: {dt:.2f} s for {a.steps} steps "
              f"({a.steps * a.batch} images)")
    net.eval()
    with torch.no_grad():
        net(x[0])
        sync(a.device)
        t0 = time.perf_counter()
        for i in range(a.steps):
            net(x[i]).argmax(1)
        sync(a.device)
        dt = time.perf_counter() - t0
    print(f"pytorch eval {a.model} b{a.batch}: {a.steps * a.batch / dt:.1f} img/s")
    if a.model == "cnn":
        conv = nn.Conv2d(128, 128, 3).to(a.device)
        h = torch.rand(32, 128, 23, 23, device=a.device)
        with torch.no_grad():
            conv(h)
            sync(a.device)
            reps = 5 if a.device == "cpu" else 200
            t0 = time.perf_counter()
            for _ in range(reps):
                conv(h)
            sync(a.device)
            dt = (time.perf_counter() - t0) / reps
        flops = 2 * 32 * 128 * 21 * 21 * 128 * 9
        print(f"pytorch conv2d_forward 128x23x23->128 b32: {flops / dt / 1e9:.1f} GFLOP/s "
              f"({dt * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
