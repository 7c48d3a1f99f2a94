"""Loads a fergpu seed-CNN checkpoint into PyTorch with `safetensors.torch` and compares its
probabilities with `fergpu eval --predictions` on the same CSV (a check of the checkpoint
layout; never a dependency of fergpu).

    python3 bench/pytorch_load_checkpoint.py CHECKPOINT DATA.csv SPLIT PREDICTIONS.csv
"""
import csv
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file

ck, data, split, preds = sys.argv[1:5]
t = load_file(ck)
net = nn.Sequential(
    nn.Conv2d(1, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(128, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 64, 3), nn.ReLU(),
    nn.Flatten(), nn.Linear(256, 64), nn.SELU(), nn.Linear(64, 7))
names = ["conv1", "conv2", "conv3", "conv4", "dense1", "dense2"]
layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
with torch.no_grad():
    for name, layer in zip(names, layers):
        layer.weight.copy_(t[f"{name}.weight"])
        layer.bias.copy_(t[f"{name}.bias"])
rows = [r for r in csv.DictReader(open(data), skipinitialspace=True) if r["Usage"] == split]
x = torch.tensor([[float(v) / 255 for v in r["pixels"].split()] for r in rows]).view(-1, 1, 48, 48)
with torch.no_grad():
    p = torch.softmax(net(x), 1)
theirs = torch.tensor([[float(v) for v in r[3:]] for r in list(csv.reader(open(preds)))[1:]])
print(f"{len(rows)} images; max |p_torch - p_fergpu| = {(p - theirs).abs().max().item():.2e}; "
      f"same argmax: {(p.argmax(1) == theirs.argmax(1)).float().mean().item() * 100:.1f}%")
