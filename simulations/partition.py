"""Partitioners: how one labelled dataset is split across simulated sites.

``iid`` deals examples at random; ``dirichlet:ALPHA`` gives each class's examples to the sites in
proportions drawn from Dirichlet(ALPHA) per class (Hsu et al., 2019; FLamby's and Flower Datasets' label
skew), so small ALPHA (0.1-0.5) makes sites with very different label mixes, large ALPHA nearly IID.
Draws are repeated (same seed stream) until every site has at least ``min_per_site`` examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

__all__ = ["PartitionSpec", "parse_partition", "partition_indices"]


@dataclass(frozen=True)
class PartitionSpec:
    """``kind`` is ``iid`` or ``dirichlet``; ``alpha`` is the Dirichlet concentration."""

    kind: str = "dirichlet"
    alpha: float = 0.5

    def __str__(self) -> str:
        return "iid" if self.kind == "iid" else f"dirichlet:{self.alpha:g}"


def parse_partition(text: str) -> PartitionSpec:
    """``"iid"`` or ``"dirichlet:ALPHA"`` (ALPHA > 0) -> :class:`PartitionSpec`; ConfigError otherwise."""
    kind, _, value = text.strip().partition(":")
    if kind == "iid" and not value:
        return PartitionSpec("iid", float("inf"))
    if kind == "dirichlet":
        try:
            alpha = float(value)
        except ValueError:
            alpha = -1.0
        if alpha > 0:
            return PartitionSpec("dirichlet", alpha)
    raise ConfigError(f"Unknown partition {text!r}: use 'iid' or 'dirichlet:ALPHA' with ALPHA > 0.")


def partition_indices(
    labels: np.ndarray, num_sites: int, spec: PartitionSpec, *, seed: int, min_per_site: int = 10
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_sites`` sorted index arrays, reproducibly from ``seed``."""
    labels = np.asarray(labels)
    if num_sites < 1 or num_sites * min_per_site > len(labels):
        raise ConfigError(
            f"Cannot split {len(labels)} examples into {num_sites} sites of at least {min_per_site}."
        )
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        if spec.kind == "iid":
            order = rng.permutation(len(labels))
            parts = [np.sort(p) for p in np.array_split(order, num_sites)]
        else:
            buckets: list[list[int]] = [[] for _ in range(num_sites)]
            for label in np.unique(labels):
                members = rng.permutation(np.flatnonzero(labels == label))
                shares = rng.dirichlet(np.full(num_sites, spec.alpha))
                cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
                for site, chunk in enumerate(np.split(members, cuts)):
                    buckets[site].extend(chunk.tolist())
            parts = [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets]
        if min(len(p) for p in parts) >= min_per_site:
            return parts
    raise ConfigError(f"Partition {spec} left a site with fewer than {min_per_site} examples 1000 times.")
