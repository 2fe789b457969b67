"""Round time of the same 3-site job on Flower's deployment engine and in simulation, with the ratio.

The job: three synthetic CT hospitals (the demo's cohort, ingested into sealed stores), the small CNN,
N rounds. The same run config goes to

* the simulation engine (``simulations.runtime.run_federation``: Ray actors, in-memory messages), and
* a real deployment on 127.0.0.1: ``flower-superlink`` with TLS and SuperNode authentication, three
  ``flower-supernode`` processes with their node keys, in each isolation mode:
  ``subprocess`` (Flower's default, Flower's own idle waits), ``process`` (Flower's
  ``flower-superexec``), ``warm`` with Flower's waits, ``warm-timers`` with capped waits, and ``warm``
  with capped waits and held empty answers (:mod:`common.flower_runtime.wakeups`, fedscan's default);
  the SuperLink's state in memory (fedscan's default) or in a SQLite file (``-sqlite``).

Each run is done plain and with SecAgg+. A round's time is the ServerApp's own record (fit start to
evaluation end, ``metrics.jsonl``); the figure is the median over rounds 2..N (round 1 includes
start-up: Ray's actors, the first task processes). Ratio = deployment / simulation; target <= 2.

Usage (the machine is shared; take the lock): flock /tmp/fedscan-heavy.lock \\
    python benchmarks/bench_deployment.py [--rounds 4] [--slices 160] [--epochs 3] [--modes ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from client.ingest import ingest_folder
from client.policy import SitePolicy
from client.site import SiteDir
from client.site_init import init_site
from client.supernode import SiteKit, SiteNode, check_site
from common.config import RunConfig
from common.flower_runtime.daemons import ProcessRef, free_port
from common.flower_runtime.wakeups import HOLD_SECONDS
from server.deployment import run_training
from server.run_records import read_round_records
from simulations.cohort import generate_cohort
from simulations.demo import demo_cohort_spec
from simulations.local_federation import forget_publishers, provision_local_federation
from simulations.runtime import run_federation

#: label -> (isolation, cap on idle waits at the server, at the sites, SuperLink state in a file?);
#: a cap of None keeps Flower's own waits. "warm" is fedscan's default.
# mode: isolation, server's wait cap, sites' wait cap, SuperLink state in a file, hold empty answers
MODES = {
    "subprocess-sqlite": ("subprocess", None, None, True, None),
    "subprocess": ("subprocess", None, None, False, None),
    "process": ("process", None, None, False, None),
    "warm-flower-waits": ("warm", None, None, False, None),
    "warm-timers": ("warm", 0.1, 0.2, False, None),
    "warm-sqlite": ("warm", 0.1, 0.2, True, HOLD_SECONDS),
    "warm": ("warm", 0.1, 0.2, False, HOLD_SECONDS),
}


def make_sites(root: Path, slices: int) -> list[SiteDir]:
    spec = demo_cohort_spec(3, slices)
    policy = SitePolicy(require_secure_aggregation=False, min_sites=3)  # plain runs too
    sites = []
    for cohort in generate_cohort(root / "pacs", spec):
        site = init_site(root / "sites" / cohort.site_id, cohort.site_id, policy=policy)
        ingest_folder(site, cohort.dicom_dir, cohort.labels_csv)
        sites.append(site)
    return sites


def steady(seconds: list[float]) -> float:
    return statistics.median(seconds[1:] or seconds)


def simulate(config: RunConfig, out_dir: Path) -> list[float]:
    run_federation(config.to_flower() | {"out-dir": str(out_dir)}, num_sites=3)
    return [r.round_seconds or 0.0 for r in read_round_records(out_dir)]


def deploy(sites: list[SiteDir], config: RunConfig, mode: str, root: Path) -> list[float]:
    from server.superlink import SuperLink

    isolation, server_wait, site_wait, in_file, hold = MODES[mode]
    for site in sites:
        forget_publishers(site)  # each deployment is a new federation with its own publisher key
    fed = provision_local_federation(sites, root / "fed", f"127.0.0.1:{free_port()}", federation="bench")
    database = root / "superlink.db" if in_file else None
    link = SuperLink(
        fed, listen_host="127.0.0.1", isolation=isolation, max_wait=server_wait, hold=hold, database=database
    )
    nodes: list[SiteNode] = []
    seen: list[ProcessRef] = []
    overrides = {k: v for k, v in config.to_flower().items() if k not in ("site-dirs", "out-dir")}
    try:
        link.start()
        link.sync_registrations()
        for site in sites:
            kit = SiteKit.load(fed.site_kit(site.root.name))
            check_site(site, kit)
            nodes.append(SiteNode(site, kit, isolation=isolation, max_wait=site_wait, hold=hold).start())
        run_training(link, overrides, out_dir=root / "run", wait_for_sites=300, timeout=3600)
    finally:
        for daemon in [*link.daemons, *(d for n in nodes for d in n.daemons)]:
            seen.extend(daemon.processes())
        for node in nodes:
            node.stop()
        link.stop()
    deadline = time.monotonic() + 30
    while any(r.alive for r in seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [r.pid for r in seen if r.alive]
    if left:
        raise RuntimeError(f"processes left behind: {left}")
    return [r.round_seconds or 0.0 for r in read_round_records(root / "run")]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--slices", type=int, default=160, help="CT slices per site (the demo's)")
    parser.add_argument("--epochs", type=int, default=3, help="local epochs per round (the demo's)")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument(
        "--skip-simulation", action="store_true", help="Deployment only (for A/B runs of two code versions)."
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, object] = {
        "rounds": args.rounds,
        "slices_per_site": args.slices,
        "local_epochs": args.epochs,
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-deploy-") as tmp:
        root = Path(tmp)
        sites = make_sites(root / "cohort", args.slices)
        for secure in (False, True):
            label = "secagg" if secure else "plain"
            config = RunConfig(
                num_server_rounds=args.rounds,
                model="cnn",
                local_epochs=args.epochs,
                optimizer="adam",
                learning_rate=0.002,
                min_fit_sites=3,
                secure_aggregation=secure,
                site_dirs=tuple(str(s.root) for s in sites),
            )
            sim = [float("nan")] if args.skip_simulation else simulate(config, root / f"sim-{label}")
            figures[f"{label}_simulation_rounds_s"] = [round(t, 2) for t in sim]
            figures[f"{label}_simulation_round_s"] = round(steady(sim), 2)
            for mode in args.modes:
                rounds = deploy(sites, config, mode, root / f"{mode}-{label}")
                figures[f"{label}_{mode}_rounds_s"] = [round(t, 2) for t in rounds]
                figures[f"{label}_{mode}_round_s"] = round(steady(rounds), 2)
                figures[f"{label}_{mode}_ratio"] = round(steady(rounds) / steady(sim), 2)
    figures["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:>40}: {value}")
    for label in ("plain", "secagg"):
        for mode in args.modes:
            ratio = figures[f"{label}_{mode}_ratio"]
            print(
                f"{label:>6} {mode:>18}: {figures[f'{label}_{mode}_round_s']} s per round in deployment vs "
                f"{figures[f'{label}_simulation_round_s']} s in simulation = {ratio}x (target <= 2)"
            )


if __name__ == "__main__":
    main()
