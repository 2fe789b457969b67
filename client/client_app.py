"""The site's Flower ClientApp (legacy ``NumPyClient`` path, where SecAgg+ runs).

The app opens its site's encrypted store in memory, trains locally and returns parameters and
aggregate metrics only: nothing per patient, no pixels, no identifiers. Evaluation sends the confusion
counts and score histograms of the site's held-out split (``common.metrics``), so the server can pool
metrics across sites without any prediction for any patient. Secure aggregation is chosen from the same
run config the ServerApp reads, so client and server always agree on the protocol.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient

from client.audit_mod import site_audit_mod, update_digest_mod
from client.dp_mods import private_aggregation_mod
from client.ledger_mod import epsilon_ledger_mod
from client.policy_mod import site_policy_mod
from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_init import load_site_key
from client.store import load_split
from client.training import train_locally
from common.config import RunConfig
from common.errors import ConfigError, TrainingError
from common.flower_runtime.message_packing import message_packing_mod
from common.models import LabelledArrays, Model, model_from_config
from common.models.svm import FEATURE_MOMENTS_TASK

__all__ = ["SiteClient", "app", "resolve_site_dir"]


def resolve_site_dir(context: Context, config: RunConfig) -> SiteDir:
    """The site directory of this SuperNode: its node config in a deployment, else ``site-dirs[i]``."""
    if "site-dir" in context.node_config:
        return SiteDir(Path(str(context.node_config["site-dir"])))
    partition = int(context.node_config.get("partition-id", -1))
    if not 0 <= partition < len(config.site_dirs):
        raise ConfigError(
            f"SuperNode has no site directory: set node config 'site-dir', or run config 'site-dirs' with "
            f"at least {partition + 1} entries (has {len(config.site_dirs)})."
        )
    return SiteDir(Path(config.site_dirs[partition]))


@functools.lru_cache(maxsize=64)
def _load_split_cached(store_dir: str, manifest_mtime_ns: int, split: str) -> LabelledArrays:
    """Decrypted splits stay in this process's memory between rounds (never on disk).

    In a simulation any worker process may serve any virtual site, so the cache holds every site's
    splits (two entries per site): with fewer entries than that, sites evicted each other and their
    stores were decrypted again in every round.
    """
    site = SiteDir(Path(store_dir).parent)
    return load_split(site.store_dir, load_site_key(site), split)


def _load(site: SiteDir, split: str) -> LabelledArrays:
    manifest = site.store_dir / "manifest.fseal"
    mtime = manifest.stat().st_mtime_ns if manifest.exists() else 0
    return _load_split_cached(str(site.store_dir), mtime, split)


@functools.lru_cache(maxsize=64)
def _site_id(root: str) -> str:
    config_file = SiteDir(Path(root)).config_file
    return SiteConfig.load(config_file).site_id if config_file.exists() else Path(root).name


@functools.lru_cache(maxsize=2)
def _model(config: RunConfig) -> Model:
    """One model object per run config and process, reused across messages.

    Building a ResNet-18 takes about 0.1 s; reuse is safe because every fit and every evaluate starts
    by setting all of the model's arrays.
    """
    return model_from_config(config)


class SiteClient(NumPyClient):
    """Trains and evaluates one site's model on its own data; returns arrays and aggregates only."""

    def __init__(
        self,
        model: Model,
        train: LabelledArrays,
        test: LabelledArrays,
        config: RunConfig,
        site_id: str = "",
    ) -> None:
        self.model = model
        self.train = train
        self.test = test
        self.config = config
        self.site_id = site_id

    def get_properties(self, config: dict) -> dict:  # type: ignore[override]
        """Answer the server's feature-moments query (aggregates of the training split only)."""
        if config.get("task") != FEATURE_MOMENTS_TASK:
            return {}
        from common.models.svm import LinearSvmModel, feature_moments

        if not isinstance(self.model, LinearSvmModel):
            raise TrainingError("Feature moments are only defined for the SVM models' features.")
        n, total, total_sq = feature_moments(self.model.raw_features(self.train.x))
        return {"num-examples": n, "sum": total.tobytes(), "sumsq": total_sq.tobytes()}

    def get_parameters(self, config: dict) -> list[np.ndarray]:  # type: ignore[override]
        return self.model.get_arrays()

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:  # type: ignore[override]
        started = time.perf_counter()
        self.model.set_arrays(parameters)
        mu = config.get("proximal_mu")
        result = train_locally(
            self.model,
            self.train,
            self.config,
            int(config.get("server-round", 0)),
            proximal_mu=None if mu is None else float(mu),
        )
        seconds = time.perf_counter() - started
        return (
            self.model.get_arrays(),
            result.num_examples,
            {"train_loss": result.loss, "compute-seconds": seconds},
        )

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:  # type: ignore[override]
        started = time.perf_counter()
        self.model.set_arrays(parameters)
        result = self.model.evaluate(self.test)
        metrics: dict = {
            "accuracy": result.accuracy,
            "site-id": self.site_id,
            "compute-seconds": time.perf_counter() - started,
            **result.counts.to_scalars(),
        }
        return result.loss, result.num_examples, metrics


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    """Build the site's client for one message (the data is cached in memory across rounds)."""
    import torch

    config = RunConfig.from_flower(context.run_config)
    torch.set_num_threads(config.threads)  # the host decides how many sites run at once
    site = resolve_site_dir(context, config)
    train = _load(site, "train")
    test = _load(site, "test")
    return SiteClient(_model(config), train, test, config, _site_id(str(site.root))).to_client()


# The site's policy first (before anything is decrypted), then the epsilon ledger (the round is booked
# before it trains: client.ledger_mod), then SecAgg+, clipping and DP noise (client.dp_mods).
# The audit mods wrap it all (round taken or refused) and see the plain update inside it (client.audit_mod).
# Outermost, the transport: one wire object per model instead of one per array
# (common.flower_runtime.message_packing).
app = ClientApp(
    client_fn=client_fn,
    mods=[
        message_packing_mod,
        site_audit_mod,
        site_policy_mod,
        epsilon_ledger_mod,
        private_aggregation_mod,
        update_digest_mod,
    ],
)
