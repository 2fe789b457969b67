"""Pooled vs each site alone vs federated, on the same sites, splits and seeds (the FLamby protocol).

For every seed, on the same site directories:

* **pooled**: one model trained on the union of the sites' training splits (what sharing the data
  would give): the same model, optimiser and plan, for ``rounds x local-epochs`` epochs;
* **local**: one model per site, trained on that site's training split alone, for as long;
* **federated**: the Flower simulation engine with the real ClientApp and ServerApp.

Every model is scored on the *pooled test set* (the union of the sites' held-out splits): one common
yardstick, so a local model is judged on the patients of the other hospitals too, as FLamby does.
Standardisation (SVMs with ``feature-scaling = "federated"``): pooled uses the pooled training moments,
which are exactly what the federation computes from site aggregates; a local model uses its site's own.
Pooled and local training runs in this process on data decrypted in memory; nothing plaintext is
written.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from client.site import SiteDir
from client.site_init import load_site_key
from client.store import load_split
from client.training import plan_for_round
from common.config import RunConfig
from common.errors import ConfigError
from common.metrics import classification_metrics
from common.models import LabelledArrays, Model, model_from_config
from server.run_records import MODEL_FILE, read_round_records
from simulations.datasets import SiteSet
from simulations.partition import PartitionSpec
from simulations.runtime import run_federation

__all__ = [
    "COMPARE_METRICS",
    "DATASETS",
    "CompareResult",
    "DatasetPreset",
    "SiteData",
    "load_sites",
    "make_sites",
    "run_compare",
    "train_centrally",
]

COMPARE_METRICS = ("accuracy", "balanced_accuracy", "auc")


@dataclass(frozen=True)
class DatasetPreset:
    """A benchmark input: how many sites, how labels are skewed, and the run-config values it uses."""

    sites: int
    partition: str
    config: dict[str, object]


DATASETS: dict[str, DatasetPreset] = {
    # (a) Linear SVM on standardised features (federated moments), 5 sites, Dirichlet 0.5 label skew.
    "breast-cancer": DatasetPreset(
        5,
        "dirichlet:0.5",
        {"model": "svm", "num_server_rounds": 10, "learning_rate": 0.01, "feature_scaling": "federated"},
    ),
    # (b) The small CNN on 64x64 slices, 4 scanners. Adam: SGD with momentum sat on the majority-class
    # plateau on some seeds, even pooled.
    "synthetic-ct": DatasetPreset(
        4,
        "dirichlet:1.0",
        {
            "model": "cnn",
            "num_server_rounds": 15,
            "local_epochs": 3,
            "learning_rate": 0.003,
            "optimizer": "adam",
        },
    ),
}


def make_sites(dataset: str, root: Path, num_sites: int, partition: PartitionSpec, *, seed: int) -> SiteSet:
    """Real sealed sites for a named dataset (``breast-cancer`` or ``synthetic-ct``) under ``root``."""
    from simulations.datasets import breast_cancer_sites, synthetic_ct_sites

    if dataset == "breast-cancer":
        return breast_cancer_sites(root, num_sites, partition, seed=seed)
    if dataset == "synthetic-ct":
        return synthetic_ct_sites(root, num_sites, partition, seed=seed)
    raise ConfigError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")


@dataclass(frozen=True)
class SiteData:
    """One site's splits, decrypted in memory."""

    name: str
    train: LabelledArrays
    test: LabelledArrays


def load_sites(site_dirs: Sequence[Path]) -> list[SiteData]:
    """Open every site's store with its own key (in memory only)."""
    out = []
    for root in site_dirs:
        site = SiteDir(Path(root))
        key = load_site_key(site)
        out.append(
            SiteData(
                Path(root).name,
                load_split(site.store_dir, key, "train"),
                load_split(site.store_dir, key, "test"),
            )
        )
    return out


def _fresh_model(config: RunConfig, train: LabelledArrays) -> Model:
    model = model_from_config(config)
    if config.feature_scaling == "federated":
        from common.models.svm import LinearSvmModel, feature_moments, standardiser_from_moments

        assert isinstance(model, LinearSvmModel)
        model.set_standardiser(*standardiser_from_moments([feature_moments(model.raw_features(train.x))]))
    return model


def train_centrally(config: RunConfig, train: LabelledArrays, *, num_sites: int = 1) -> Model:
    """Train one model on data held in one place, with the work of the whole federated run.

    ``rounds x local-epochs`` epochs (or ``rounds x local-steps x num_sites`` steps, the federation's
    total step count), with the run's optimiser, batch size and class weighting; no proximal term.
    """
    model = _fresh_model(config, train)
    plan = plan_for_round(config, 1, train, proximal_mu=0.0, num_classes=model.num_classes)
    plan = dataclasses.replace(
        plan,
        epochs=config.num_server_rounds * config.local_epochs,
        steps=config.num_server_rounds * config.local_steps * num_sites,
    )
    model.fit(train, plan)
    return model


def _score(model: Model, test: LabelledArrays) -> dict[str, float]:
    metrics = classification_metrics(test.y, model.predict_scores(test.x))
    return {k: float(metrics[k]) for k in COMPARE_METRICS}  # type: ignore[arg-type]


@dataclass
class CompareResult:
    """Scores per seed: ``pooled``, ``federated`` and ``local[site]``, each a metric -> value mapping."""

    seeds: list[int]
    sites: list[str]
    pooled: list[dict[str, float]] = field(default_factory=list)
    federated: list[dict[str, float]] = field(default_factory=list)
    local: list[dict[str, dict[str, float]]] = field(default_factory=list)
    federated_rounds: list[int] = field(default_factory=list)
    test_examples: int = 0
    train_examples: dict[str, int] = field(default_factory=dict)

    def local_mean(self, seed_index: int) -> dict[str, float]:
        per_site = self.local[seed_index]
        return {m: float(np.nanmean([s[m] for s in per_site.values()])) for m in COMPARE_METRICS}

    def summary(self) -> dict[str, object]:
        """Mean and standard deviation over seeds of every row, and the target ratios."""

        def stats(values: list[float]) -> dict[str, float]:
            return {
                "mean": float(np.nanmean(values)),
                "std": float(statistics.pstdev(values)) if len(values) > 1 else 0.0,
            }

        rows: dict[str, dict[str, dict[str, float]]] = {
            "pooled": {m: stats([p[m] for p in self.pooled]) for m in COMPARE_METRICS},
            "federated": {m: stats([f[m] for f in self.federated]) for m in COMPARE_METRICS},
            "local (mean of sites)": {
                m: stats([self.local_mean(i)[m] for i in range(len(self.seeds))]) for m in COMPARE_METRICS
            },
        }
        for site in self.sites:
            rows[f"local {site}"] = {m: stats([loc[site][m] for loc in self.local]) for m in COMPARE_METRICS}
        ratio = {
            m: rows["federated"][m]["mean"] / rows["pooled"][m]["mean"]
            if rows["pooled"][m]["mean"]
            else float("nan")
            for m in COMPARE_METRICS
        }
        margin = {
            m: rows["federated"][m]["mean"] - rows["local (mean of sites)"][m]["mean"]
            for m in COMPARE_METRICS
        }
        return {
            "seeds": self.seeds,
            "sites": self.sites,
            "test_examples": self.test_examples,
            "train_examples": self.train_examples,
            "federated_rounds": self.federated_rounds,
            "rows": rows,
            "federated_over_pooled": ratio,
            "federated_minus_local_mean": margin,
            "per_seed": {
                "pooled": self.pooled,
                "federated": self.federated,
                "local": self.local,
            },
        }


def run_compare(
    site_dirs: Sequence[Path],
    config: RunConfig,
    seeds: Sequence[int],
    *,
    work_dir: Path | None = None,
    on_stage: Callable[[str], None] = lambda _: None,
) -> CompareResult:
    """Run the three arms for every seed; ``config`` is the federated run's configuration (any seed).

    ``work_dir`` receives one run directory per seed (metrics.jsonl, checkpoints, final model); a
    temporary folder, removed afterwards, when ``None``.
    """
    sites = load_sites(site_dirs)
    pooled_train = LabelledArrays.concat([s.train for s in sites])
    pooled_test = LabelledArrays.concat([s.test for s in sites])
    result = CompareResult(
        seeds=list(seeds),
        sites=[s.name for s in sites],
        test_examples=len(pooled_test),
        train_examples={s.name: len(s.train) for s in sites},
    )
    with tempfile.TemporaryDirectory(prefix="fedscan-compare-") as scratch:
        base = Path(work_dir) if work_dir is not None else Path(scratch)
        for seed in seeds:
            seeded = dataclasses.replace(config, seed=seed)
            on_stage(f"seed {seed}: pooled training on {len(pooled_train)} examples")
            result.pooled.append(
                _score(train_centrally(seeded, pooled_train, num_sites=len(sites)), pooled_test)
            )
            local: dict[str, dict[str, float]] = {}
            for site in sites:
                on_stage(f"seed {seed}: {site.name} alone ({len(site.train)} examples)")
                local[site.name] = _score(train_centrally(seeded, site.train), pooled_test)
            result.local.append(local)
            on_stage(
                f"seed {seed}: federated, {config.num_server_rounds} rounds, {len(sites)} sites (Flower)"
            )
            run_dir = base / f"federated-seed-{seed}"
            federated = dataclasses.replace(
                seeded,
                site_dirs=tuple(str(Path(p).resolve()) for p in site_dirs),
                min_fit_sites=len(sites),
                out_dir=str(run_dir),
                resume=False,
            )
            run_federation(federated.to_flower(), num_sites=len(sites))
            model = model_from_config(federated)
            with np.load(run_dir / MODEL_FILE) as npz:
                model.set_arrays([npz[f"arr_{i}"] for i in range(len(npz.files))])
            result.federated.append(_score(model, pooled_test))
            result.federated_rounds.append(len(read_round_records(run_dir)))
    return result
