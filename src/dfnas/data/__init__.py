"""Data: tasks with real data (MNIST, mnist-clutter, CIFAR-10 folders), user sources (npz,
ImageFolder), the synthetic-set reader, augmentations and the input spec every stage shares.

    from dfnas.data import load_source, SyntheticDataset
    src = load_source("runs/synth")      # or "mnist", "cifar10:DIR", "x.npz", "images/"
"""

from dfnas.data.sources import TASKS, Source, load_source, task_names
from dfnas.data.spec import InputSpec
from dfnas.data.synthetic import SyntheticDataset, read_dataset

__all__ = ["TASKS", "InputSpec", "Source", "SyntheticDataset", "load_source", "read_dataset", "task_names"]
