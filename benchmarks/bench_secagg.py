"""What does SecAgg+ cost per round? The CNN at 5, 10 and 20 simulated sites, with and without it.

For each number of sites, the same sealed sites and the same run config train the small CNN through
Flower's simulation engine twice: plain FedAvg (``secure-aggregation = false``) and SecAgg+ with the
parameters fedscan derives (``common.privacy.secagg_parameters``). Printed per site count: the median
round time of rounds 2..N (round 1 also starts the ClientApp actors and decrypts every store), each
round's time, the SecAgg+ parameters used, and the ratio SecAgg+ / plain (target <= 2).

The sites are sealed stores of synthetic 64x64 slices with a learnable bright patch (``--slices`` per
site, 70% train) written directly, not generated DICOM cohorts: this measures the federation, not
ingest. Run it under the shared lock: ``flock /tmp/fedscan-heavy.lock python benchmarks/bench_secagg.py``.
Usage: python benchmarks/bench_secagg.py [--sites 5,10,20] [--rounds 3] [--slices 100] [--epochs 2] [--json]
(the local work of benchmarks/bench_federation.py; less local work makes the protocol's fixed cost weigh more)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from client.policy import SitePolicy
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from common.config import RunConfig
from server.run_records import read_round_records
from simulations.runtime import run_federation


def make_site(root: Path, index: int, slices: int, size: int = 64) -> Path:
    """One sealed site of ``slices`` synthetic slices (a bright patch marks the positive class)."""
    site = init_site(
        root / f"site-{index}", f"site-{index}", policy=SitePolicy(require_secure_aggregation=False)
    )
    rng = np.random.default_rng(index)
    writer = StoreWriter(
        site.store_dir, load_site_key(site), image_size=size, split_fractions=(0.7, 0.0, 0.3)
    )
    for i in range(slices):
        label = int(rng.random() < 0.4)
        pixels = rng.normal(0.35, 0.08, (size, size)).astype(np.float32)
        if label:
            y, x = rng.integers(8, size - 16, 2)
            pixels[y : y + 8, x : x + 8] += 0.35
        writer.add(Record(pixels=np.clip(pixels, 0, 1), label=label, patient=f"p{i}", study=f"s{i}"))
    writer.commit()
    return site.root


def run(site_dirs: list[Path], out: Path, *, secure: bool, rounds: int, epochs: int) -> dict[str, object]:
    config = RunConfig(
        model="cnn",
        num_server_rounds=rounds,
        local_epochs=epochs,
        optimizer="adam",
        learning_rate=0.002,
        min_fit_sites=len(site_dirs),
        site_dirs=tuple(str(p) for p in site_dirs),
        out_dir=str(out),
        secure_aggregation=secure,
        checkpoints=False,
    )
    started = time.time()
    run_federation(config.to_flower(), num_sites=len(site_dirs))
    records = read_round_records(out)
    times = [r.round_seconds or 0.0 for r in records]
    return {
        "wall_s": round(time.time() - started, 2),
        "rounds_s": [round(t, 2) for t in times],
        "fit_s": [round(r.fit_seconds or 0.0, 2) for r in records],
        "median_round_s": round(statistics.median(times[1:] or times), 3),
        "accuracy": records[-1].accuracy,
        "secagg": records[-1].privacy.get("secagg"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="5,10,20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-secagg-") as tmp:
        root = Path(tmp)
        for count in [int(s) for s in args.sites.split(",")]:
            site_dirs = [make_site(root / f"n{count}", i, args.slices) for i in range(count)]
            plain = run(
                site_dirs, root / f"n{count}-plain", secure=False, rounds=args.rounds, epochs=args.epochs
            )
            secure = run(
                site_dirs, root / f"n{count}-secagg", secure=True, rounds=args.rounds, epochs=args.epochs
            )
            ratio = float(secure["median_round_s"]) / float(plain["median_round_s"])  # type: ignore[arg-type]
            results[str(count)] = {"plain": plain, "secagg": secure, "ratio": round(ratio, 3)}
            if not args.json:
                print(
                    f"{count:>3} sites: plain {plain['median_round_s']:.2f} s/round, SecAgg+ "
                    f"{secure['median_round_s']:.2f} s/round, ratio {ratio:.2f}x (target <= 2); "
                    f"rounds plain {plain['rounds_s']} secagg {secure['rounds_s']}; "
                    f"accuracy {plain['accuracy']} / {secure['accuracy']}; SecAgg+ {secure['secagg']}",
                    flush=True,
                )
    results["load_average_before"] = [round(v, 2) for v in load_before]
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["settings"] = vars(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")


if __name__ == "__main__":
    main()
