"""FLOPs (multiply-adds) and params on layers counted by hand; cost tables; latency cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dfnas.spaces import LayerChoice
from dfnas.spaces.profile import (
    build_cost_tables,
    count_flops,
    count_params,
    flops_of_arch,
    measure_latency_table,
)


@pytest.mark.parametrize("layer, shape, flops, params", [
    (nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10), 8 * 10 * 10 * 3 * 9, 8 * 3 * 9 + 8),
    (nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), (3, 10, 10), 8 * 5 * 5 * 3 * 9, 8 * 3 * 9),
    (nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), (8, 10, 10), 8 * 10 * 10 * 25, 8 * 25),
    (nn.Linear(20, 5), (20,), 100, 105),
    (nn.BatchNorm2d(8), (8, 10, 10), 800, 16),
    (nn.MaxPool2d(2), (8, 10, 10), 8 * 5 * 5 * 4, 0),
    (nn.AvgPool2d(3, stride=1, padding=1), (8, 10, 10), 8 * 10 * 10 * 9, 0),
    (nn.AdaptiveAvgPool2d(1), (8, 10, 10), 800, 0),
    (nn.ReLU(), (8, 10, 10), 0, 0),
])
def test_layer_counts_by_hand(layer: nn.Module, shape: tuple[int, ...], flops: int, params: int) -> None:
    assert count_flops(layer, shape) == flops
    assert count_params(layer) == params


def test_network_sum_and_modes_restored() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    net.train()
    before = net[1].running_mean.clone()
    assert count_flops(net, (1, 6, 6)) == 4 * 36 * 9 + 4 * 36 + 4 * 36 + 8
    assert net.training and torch.equal(before, net[1].running_mean)  # eval during counting only


class Toy(nn.Module):
    """A stem + one choice between a 3x3 conv, a 1x1 conv and identity + a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 1, bias=False)  # 4*16*1 = 64 MACs on 4x4
        self.choice = LayerChoice("c", {"k3": nn.Conv2d(4, 4, 3, padding=1, bias=False),
                                        "k1": nn.Conv2d(4, 4, 1, bias=False), "id": nn.Identity()})
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.choice(self.stem(x))).flatten(1))


def test_cost_table_of_a_toy_supernet() -> None:
    net = Toy()
    flops, params = build_cost_tables(net, (1, 4, 4))
    base = 64 + 64 + 12
    assert flops.base == base
    assert flops.entries["choice"] == ("c", {"k3": 4 * 16 * 36, "k1": 4 * 16 * 4, "id": 0})
    assert flops_of_arch(flops, {"c": "k1"}) == base + 256
    assert params.cost({"c": "id"}) == 4 + 15
    assert flops.per_label() == {"c": {"k3": 2304.0, "k1": 256.0, "id": 0.0}}
    assert net.choice.mixer is None and net.choice.active == "k3"  # untouched


def test_latency_table_measured_and_cached(tmp_path) -> None:
    net = Toy()
    cache = tmp_path / "lat.json"
    t1 = measure_latency_table(net, (1, 4, 4), repeats=2, warmup=1, cache=cache)
    assert cache.is_file() and t1.unit == "ms" and t1.base >= 0
    assert set(t1.entries["choice"][1]) == {"k3", "k1", "id"}
    assert all(v > 0 for v in t1.entries["choice"][1].values())
    t2 = measure_latency_table(net, (1, 4, 4), repeats=2, warmup=1, cache=cache)
    assert t2.to_dict() == t1.to_dict()  # read back, not measured again
    t3 = measure_latency_table(net, (1, 4, 4), batch_size=2, repeats=1, warmup=0, cache=cache)
    assert t3.key["batch_size"] == 2  # another setting is measured anew
