"""CIFAR ResNets (He et al., 2016, section 4.2): the bundled `cifar10-resnet20` teacher's network.

3x3 conv (16) - BN - ReLU, three stages of n basic blocks at 16/32/64 channels (depth = 6n + 2;
the first block of stages 2 and 3 strides 2), global pooling, linear. A block is conv-BN-ReLU-
conv-BN plus the shortcut, then ReLU; where the shape changes the shortcut is parameter-free
("option A"): every second pixel, channels zero-padded on both sides. Parameter names follow
the public checkpoints of `akamaster/pytorch_resnet_cifar10` (BSD-2-Clause), so their
ResNet-20/32/44/56/110 weights load as they are: a factory teacher is built with no arguments,
so `--teacher dfnas.teachers.resnet_cifar:build` is ResNet-20 and
`--teacher dfnas.teachers.resnet_cifar:resnet56 --weights resnet56-4bfd9763.th` is ResNet-56.

The shipped weights are converted once, with their accuracy on a labelled test set, by

    python -m dfnas.teachers.resnet_cifar convert resnet20-12fca82f.th --depth 20 \
        --test npz:cifar10-test.npz --out src/dfnas/teachers/weights/cifar10-resnet20

(`cifar10-test.npz`: arrays `x`, `y` of the labelled test images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dfnas.data.sources import cifar10_spec

# the spec the original training used: RGB in [0, 1], normalised with the ImageNet constants
CIFAR10_SPEC = cifar10_spec().to_dict()


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = (c_out - c_in) // 2 if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        c = width
        stages = []
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, c_out, 2 if i > 0 and j == 0 else 1))
                c = c_out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(depth: int = 20, num_classes: int = 10) -> CifarResNet:
    return CifarResNet(depth=depth, num_classes=num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(depth=56, num_classes=num_classes)


def _convert(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    from dfnas.data.sources import load_source
    from dfnas.data.spec import InputSpec
    from dfnas.io import atomic_write_json, sha256_tensors
    from dfnas.teachers import _apply_weights, load_state_dict_file

    model = build(args.depth)
    _apply_weights(model, load_state_dict_file(args.checkpoint), args.checkpoint)
    model.eval()
    spec = InputSpec.from_dict(CIFAR10_SPEC)
    test = load_source(args.test, spec, split="test")
    with torch.inference_mode():
        pred = torch.cat([model(spec.normalize(test.x[i:i + 250].float() / 255)).argmax(1)
                          for i in range(0, len(test), 250)])
    acc = round(float((pred == test.y).float().mean()), 4)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, f"{args.out}.safetensors")
    atomic_write_json(f"{args.out}.json", {
        "name": f"cifar10-resnet{args.depth}", "task": None, "factory": "dfnas.teachers.resnet_cifar:build",
        "factory_kwargs": {"depth": args.depth}, "spec": CIFAR10_SPEC, "test_accuracy": acc,
        "split": args.split or f"{args.test} ({len(test)} images)",
        "source": "akamaster/pytorch_resnet_cifar10, pretrained_models/ (BSD-2-Clause; notice in LICENSE-resnet-cifar10)",
        "weights_sha256": sha256_tensors(sd),
        "command": f"python -m dfnas.teachers.resnet_cifar convert {Path(args.checkpoint).name} --depth {args.depth} "
                   f"--test {args.test} --out {args.out}",
    })
    print(json.dumps({"test_accuracy": acc, "images": len(test)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="convert a CIFAR ResNet checkpoint into bundled weights + record")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("checkpoint")
    c.add_argument("--depth", type=int, default=20)
    c.add_argument("--test", required=True, help="labelled test data, e.g. npz:cifar10-sample.npz")
    c.add_argument("--out", required=True, help="output stem: writes STEM.safetensors and STEM.json")
    c.add_argument("--split", default=None, help="what the test data is, for the record")
    _convert(ap.parse_args())
