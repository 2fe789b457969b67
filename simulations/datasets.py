"""Real fedscan sites for experiments: the Wisconsin breast-cancer data, or a synthetic CT cohort.

Every experiment input becomes a list of *real* site directories (keys 0600, sealed store), so that a
benchmark exercises the same data path as a hospital: the ClientApp opens its own encrypted store.

* **breast-cancer**: scikit-learn's bundled Wisconsin diagnostic data (569 fine-needle aspirates, 30
  features, malignant = 1 here), split across sites with :mod:`simulations.partition`. The store holds
  square records, so each feature vector is packed row-major into a ``side x side`` record
  (``side = ceil(sqrt(30)) = 6``), zero-padded; the SVM reads back the first ``num-features`` values.
  Each site splits its records 80/20 into train and test (per record, seeded).
* **synthetic-ct**: :func:`simulations.cohort.generate_cohort` writes DICOM exports with per-site scanner
  differences and label skew (Dirichlet ``alpha``); each site then runs the real ingest
  (de-identification, pixels, sealing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.ingest import ingest_folder
from client.policy import SitePolicy
from client.site import SiteDir
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from common.errors import ConfigError
from simulations.partition import PartitionSpec, partition_indices

__all__ = [
    "BREAST_CANCER_FEATURES",
    "SiteSet",
    "breast_cancer_sites",
    "experiment_policy",
    "synthetic_ct_sites",
]

BREAST_CANCER_FEATURES = 30


@dataclass(frozen=True)
class SiteSet:
    """Site directories made for an experiment, and the run-config keys their records need."""

    site_dirs: tuple[Path, ...]
    image_size: int
    num_features: int = 0
    description: str = ""


def experiment_policy(num_sites: int) -> SitePolicy:
    """The safe site policy, with a minimum number of sites the experiment can meet (2-site runs too)."""
    return SitePolicy(min_sites=max(2, min(3, num_sites)))


def breast_cancer_sites(root: Path, num_sites: int, partition: PartitionSpec, *, seed: int) -> SiteSet:
    """Split the Wisconsin breast-cancer data across ``num_sites`` new sites under ``root``."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    y = 1 - np.asarray(data.target, dtype=np.int64)  # scikit-learn codes benign as 1; the finding is 1 here
    side = math.ceil(math.sqrt(x.shape[1]))
    packed = np.zeros((len(x), side * side), dtype=np.float32)
    packed[:, : x.shape[1]] = x
    sites = []
    for index, members in enumerate(partition_indices(y, num_sites, partition, seed=seed)):
        site = init_site(
            Path(root) / f"site-{index + 1}", f"site-{index + 1}", policy=experiment_policy(num_sites)
        )
        writer = StoreWriter(
            site.store_dir,
            load_site_key(site),
            image_size=side,
            split_seed=seed,
            split_fractions=(0.8, 0.0, 0.2),
        )
        for row in members:
            writer.add(
                Record(
                    pixels=packed[row].reshape(side, side),
                    label=int(y[row]),
                    patient=f"bc-{row:04d}",  # pseudonymous record number: each aspirate is one patient
                    study=f"bc-{row:04d}",
                )
            )
        writer.commit()
        sites.append(site.root)
    return SiteSet(
        tuple(sites),
        image_size=side,
        num_features=x.shape[1],
        description=f"Wisconsin breast cancer, {num_sites} sites, {partition}, seed {seed}",
    )


def synthetic_ct_sites(
    root: Path,
    num_sites: int,
    partition: PartitionSpec,
    *,
    seed: int,
    slices_per_site: int = 160,
    lesion_contrast_hu: float = 200.0,
    workers: int = 1,
    reuse: bool = False,
    policy: SitePolicy | None = None,
) -> SiteSet:
    """Generate a synthetic CT cohort (scanner differences, label skew) and ingest it into new sites.

    The DICOM exports (plaintext, fake PHI) go to ``root/pacs-exports``, the sites to
    ``root/sites/site-K``. With ``reuse``, sites that an earlier call made under ``root`` are returned
    as they are (a resumed run must federate the same sites, in the same order); a half-made set is an
    error, never silently completed. ``policy`` is every new site's policy (default:
    :func:`experiment_policy`).
    """
    from simulations.cohort import CohortSpec, generate_cohort

    description = (
        f"synthetic CT, {num_sites} sites x {slices_per_site} slices, {partition}, "
        f"lesion {lesion_contrast_hu:g} HU, seed {seed}"
    )
    # generate_cohort names its sites site-1 .. site-N, in this order.
    expected = [SiteDir(Path(root) / "sites" / f"site-{k + 1}") for k in range(num_sites)]
    if reuse and (Path(root) / "sites").exists():
        ready = [(s.store_dir / "manifest.fseal").exists() for s in expected]
        extra = {p.name for p in (Path(root) / "sites").iterdir()} - {s.root.name for s in expected}
        if not all(ready) or extra:
            raise ConfigError(
                f"{Path(root) / 'sites'} does not hold exactly {num_sites} ingested sites "
                f"(site-1 .. site-{num_sites}); use a new folder to generate them again."
            )
        return SiteSet(tuple(s.root for s in expected), image_size=64, description=description)
    spec = CohortSpec(
        n_sites=num_sites,
        slices_per_site=slices_per_site,
        seed=seed,
        lesion_contrast_hu=lesion_contrast_hu,
        label_skew_alpha=partition.alpha if partition.kind == "dirichlet" else 1e6,
    )
    cohorts = generate_cohort(Path(root) / "pacs-exports", spec, workers=workers)
    sites: list[SiteDir] = []
    for cohort in cohorts:
        site = init_site(
            Path(root) / "sites" / cohort.site_id,
            cohort.site_id,
            policy=policy if policy is not None else experiment_policy(num_sites),
        )
        ingest_folder(site, cohort.dicom_dir, cohort.labels_csv)
        sites.append(site)
    return SiteSet(
        tuple(s.root for s in sites),
        image_size=64,  # the sites' default pixels.image_size
        description=description,
    )
