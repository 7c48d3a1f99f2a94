"""Rebuilds any fergpu model in PyTorch from a checkpoint's metadata alone, loads its tensors
with `safetensors.torch`, and compares its evaluation-mode probabilities with
`fergpu eval --predictions` on the same CSV (a check of the checkpoint layout; never a
dependency of fergpu).

    fergpu eval --checkpoint CK --data DATA.csv --split PublicTest --predictions P.csv
    python3 bench/pytorch_load_checkpoint.py CK DATA.csv PublicTest P.csv

The model description is the JSON under the metadata key `fergpu.model`; tensors are named
`convN.*`, `denseN.*` and `bnN.*` (weight, bias, running_mean, running_var), numbered in
layer order. Batch norms after a convolution are `BatchNorm2d`, after Flatten, a dense layer
or global average pooling `BatchNorm1d`; dropout has no tensors (and does nothing in eval).
"""
import csv
import json
import sys

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,  # alpha 1, as fergpu
    "selu": nn.SELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def activation(name):
    """The module of an activation, or None for linear."""
    return None if name == "linear" else ACTIVATIONS[name]()


def padding(value, kernel):
    """fergpu's `padding` ("valid" when absent, "same", or pixels) as pixels per side."""
    if value is None or value == "valid":
        return 0
    if value == "same":
        return kernel // 2
    return int(value)


def build(spec, t):
    """nn.Sequential of `spec` (fergpu's model JSON) with the tensors of `t` loaded."""
    layers = []
    c, h, w, flat = 1, 48, 48, None  # (C, H, W), or the features once flat
    n = {"conv": 0, "dense": 0, "bn": 0}

    def load(module, name, keys):
        for k in keys:
            getattr(module, k).copy_(t[f"{name}.{k}"])

    with torch.no_grad():
        for layer in spec["layers"]:
            kind = layer["type"]
            if kind == "conv2d":
                k = layer.get("kernel", 3)
                pad = padding(layer.get("padding"), k)
                n["conv"] += 1
                m = nn.Conv2d(c, layer["filters"], k, padding=pad)
                load(m, f"conv{n['conv']}", ["weight", "bias"])
                layers.append(m)
                c, h, w = layer["filters"], h + 2 * pad - k + 1, w + 2 * pad - k + 1
                act = activation(layer.get("activation", "relu"))
                layers += [act] if act else []
            elif kind in ("maxpool", "maxpool2d"):
                size = layer.get("size", 2)
                layers.append(nn.MaxPool2d(size))
                h, w = h // size, w // size
            elif kind == "flatten":
                if flat is None:
                    layers.append(nn.Flatten())
                    flat = c * h * w
            elif kind == "globalavgpool":
                layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
                flat = c
            elif kind == "dense":
                n["dense"] += 1
                name = f"dense{n['dense']}"
                w = t[f"{name}.weight"]
                m = nn.Linear(w.shape[1], w.shape[0])
                load(m, name, ["weight", "bias"])
                layers.append(m)
                flat = w.shape[0]
                act = activation(layer.get("activation", "linear"))
                layers += [act] if act else []
            elif kind == "batchnorm":
                n["bn"] += 1
                name = f"bn{n['bn']}"
                features = flat if flat is not None else c
                bn = nn.BatchNorm1d if flat is not None else nn.BatchNorm2d
                m = bn(features, eps=layer.get("eps", 1e-5), momentum=layer.get("momentum", 0.1))
                load(m, name, ["weight", "bias", "running_mean", "running_var"])
                layers.append(m)
            elif kind == "dropout":
                layers.append(nn.Dropout(layer.get("rate", 0.5)))
            elif kind == "activation":
                act = activation(layer["activation"])
                layers += [act] if act else []
            else:
                raise ValueError(f"unknown layer type {kind}")
    return nn.Sequential(*layers).eval()


def main():
    ck, data, split, preds = sys.argv[1:5]
    with safe_open(ck, framework="pt") as f:
        spec = json.loads(f.metadata()["fergpu.model"])
    net = build(spec, load_file(ck))
    rows = [r for r in csv.DictReader(open(data), skipinitialspace=True) if r["Usage"] == split]
    x = torch.tensor([[float(v) / 255 for v in r["pixels"].split()] for r in rows])
    with torch.no_grad():
        p = torch.softmax(net(x.view(-1, 1, 48, 48)), 1)
    theirs = torch.tensor([[float(v) for v in r[3:]] for r in list(csv.reader(open(preds)))[1:]])
    print(f"{spec['name']}: {len(rows)} images; max |p_torch - p_fergpu| = "
          f"{(p - theirs).abs().max().item():.2e}; "
          f"same argmax: {(p.argmax(1) == theirs.argmax(1)).float().mean().item() * 100:.1f}%")


if __name__ == "__main__":
    main()
