"""What does the federation cost on top of the training itself? 10 sites, 5 rounds, the small CNN.

Prints, measured in the same run on the same sites (a synthetic CT cohort, ingested into sealed stores):

* the wall time of the Flower simulation (Ray start-up included, and after it: round 1 start to the
  end of the last round, from the run's metrics.jsonl);
* the pure local compute of the same work without Flower: every site's local training and evaluation,
  every round, with FedAvg in between, (a) in one process, one thread, and (b) in as many worker
  processes as the simulation runs sites at once (the fair reference for the simulation's wall time);
* the overhead ratio: simulation wall time after start-up / pure local compute wall time (b). Start-up
  is Ray's (before round 1) and the ClientApp actors' (round 1 also imports torch and decrypts each
  store in each actor); so the ratio is taken over rounds 2..N, and also printed over all rounds.

Plain FedAvg by default: the cost of the federation itself (Flower, Ray, messages, checks,
checkpoints). ``--secagg`` runs the same work under SecAgg+ (the default of a real run), whose own cost
``benchmarks/bench_secagg.py`` breaks down.

Usage: python benchmarks/bench_federation.py [--sites 10] [--rounds 5] [--slices 100] [--epochs 2] [--secagg]
       [--repeats N]  (N simulation + local pairs on the same sites, default 3; their median is the figure)
The machine is shared: the load average before and after is printed with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from client.policy import SitePolicy
from client.training import train_locally
from common.config import RunConfig
from common.models import model_from_config
from server.run_records import read_round_records
from simulations.compare import SiteData, load_sites
from simulations.datasets import synthetic_ct_sites
from simulations.partition import parse_partition
from simulations.runtime import run_federation

_SITES: list[SiteData] = []
_CONFIG: RunConfig | None = None


def _init_worker(site_dirs: list[str], config: RunConfig) -> None:
    import torch

    global _SITES, _CONFIG
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)
    _SITES, _CONFIG = load_sites([Path(p) for p in site_dirs]), config


def _site_round(site: int, server_round: int, arrays: list[np.ndarray]) -> tuple[int, list[np.ndarray]]:
    """One site's work in one round, exactly as its ClientApp does it: fit, then evaluate."""
    assert _CONFIG is not None
    model = model_from_config(_CONFIG)
    model.set_arrays(arrays)
    result = train_locally(model, _SITES[site].train, _CONFIG, server_round)
    trained = model.get_arrays()
    model.evaluate(_SITES[site].test)
    return result.num_examples, trained


def _fedavg(updates: list[tuple[int, list[np.ndarray]]]) -> list[np.ndarray]:
    total = sum(n for n, _ in updates)
    return [
        (sum(n * arrays[i].astype(np.float64) for n, arrays in updates) / total).astype(
            updates[0][1][i].dtype
        )
        for i in range(len(updates[0][1]))
    ]


def local_compute(site_dirs: list[Path], config: RunConfig, workers: int) -> list[float]:
    """Seconds per round for the federation's local work without Flower, with ``workers`` processes.

    The workers are started and warmed up (imports, data decryption, a first training step) before
    the clock starts, as the simulation's ClientApp actors are by the end of its first round.
    """
    global_arrays = model_from_config(config).get_arrays()
    args = ([str(p) for p in site_dirs], config)
    times: list[float] = []
    if workers == 1:
        _init_worker(*args)
        _site_round(0, 0, global_arrays)  # warm up
        for server_round in range(1, config.num_server_rounds + 1):
            start = time.perf_counter()
            updates = [_site_round(s, server_round, global_arrays) for s in range(len(site_dirs))]
            global_arrays = _fedavg(updates)
            times.append(time.perf_counter() - start)
        return times
    # Fresh interpreters, not forks: a fork of a process that has run Ray can crash in Ray's library.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init_worker, initargs=args) as pool:
        list(pool.map(_site_round, range(workers), [0] * workers, [global_arrays] * workers))  # warm up
        for server_round in range(1, config.num_server_rounds + 1):
            start = time.perf_counter()
            futures = [
                pool.submit(_site_round, s, server_round, global_arrays) for s in range(len(site_dirs))
            ]
            global_arrays = _fedavg([f.result() for f in futures])
            times.append(time.perf_counter() - start)
    return times


def measure(site_dirs: list[Path], config: RunConfig, sites: int, concurrent: int) -> dict[str, object]:
    """One simulation of the run and the same local work in plain processes, right after it."""
    shutil.rmtree(config.out_dir, ignore_errors=True)
    started = time.time()
    run_federation(config.to_flower(), num_sites=sites, concurrent_sites=concurrent)
    ended = time.time()
    rounds = read_round_records(Path(config.out_dir))
    round_times = [r.round_seconds or 0.0 for r in rounds]
    first = rounds[0].started_at or started
    plain = dataclasses.replace(config, out_dir="", site_dirs=())
    parallel = local_compute(site_dirs, plain, workers=concurrent)
    # Round 1 of the simulation also starts the ClientApp actors (imports, first decryption of each
    # store, first torch calls): that is start-up, which the plain workers did before their clock.
    steady_sim, steady_local = sum(round_times[1:]), sum(parallel[1:])
    return {
        "simulation_wall_s": round(ended - started, 2),
        "ray_startup_before_round_1_s": round(first - started, 2),
        "simulation_rounds_s": [round(t, 2) for t in round_times],
        "clientapp_compute_per_round_s": [round(r.site_compute_seconds, 2) for r in rounds],
        f"local_compute_rounds_{concurrent}_processes_s": [round(t, 2) for t in parallel],
        f"local_compute_{concurrent}_processes_s": round(sum(parallel), 2),
        "overhead_ratio_rounds_2_on": round(steady_sim / steady_local, 3) if steady_local else None,
        "overhead_ratio_all_rounds": round(sum(round_times) / sum(parallel), 3),
        "overhead_per_round_s": round((steady_sim - steady_local) / max(1, len(round_times) - 1), 3),
        # Medians of rounds 2..N: less sensitive to other jobs on a shared machine than the sums.
        "overhead_ratio_median_round": round(
            statistics.median(round_times[1:] or round_times) / statistics.median(parallel[1:] or parallel), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=100, help="slices per site (70%% train)")
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--secagg", action="store_true", help="run the simulation under SecAgg+")
    parser.add_argument(
        "--repeats", type=int, default=3, help="simulation + local pairs; the median ratio is the figure"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    concurrent = min(os.cpu_count() or 1, args.sites)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-") as tmp:
        root = Path(tmp)
        site_set = synthetic_ct_sites(
            root / "cohort",
            args.sites,
            parse_partition("dirichlet:1.0"),
            seed=3,
            slices_per_site=args.slices,
            policy=SitePolicy(require_secure_aggregation=args.secagg),
        )
        config = RunConfig(
            model="cnn",
            num_server_rounds=args.rounds,
            local_epochs=args.epochs,
            optimizer="adam",
            learning_rate=0.002,
            min_fit_sites=args.sites,
            secure_aggregation=args.secagg,
            site_dirs=tuple(str(p) for p in site_set.site_dirs),
            out_dir=str(root / "run"),
            checkpoints=True,
        )
        site_dirs = list(site_set.site_dirs)
        runs = [measure(site_dirs, config, args.sites, concurrent) for _ in range(max(1, args.repeats))]
        plain = dataclasses.replace(config, out_dir="", site_dirs=())
        sequential = local_compute(site_dirs, plain, workers=1)
        examples = sum(len(s.train) for s in load_sites(site_dirs))
    ratios = [float(r["overhead_ratio_rounds_2_on"] or 0.0) for r in runs]  # type: ignore[arg-type]
    figures: dict[str, object] = {
        "sites": args.sites,
        "secure_aggregation": args.secagg,
        "rounds": args.rounds,
        "local_epochs": args.epochs,
        "train_examples": examples,
        "concurrent_sites": concurrent,
        **runs[-1],
        "local_compute_1_process_s": round(sum(sequential), 2),
        "overhead_ratio_rounds_2_on_each_repeat": ratios,
        "overhead_ratio_rounds_2_on_median": round(statistics.median(ratios), 3),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:>40}: {value}")
    print(
        f"federation overhead after start-up: {figures['overhead_ratio_rounds_2_on_median']}x the same local "
        f"work in {concurrent} plain processes (median of {len(runs)}: {ratios}; target <= 1.3); "
        f"all rounds, last repeat: {figures['overhead_ratio_all_rounds']}x"
    )


if __name__ == "__main__":
    main()
