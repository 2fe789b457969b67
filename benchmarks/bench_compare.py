"""Does federated training match pooled training? Both benchmarks of the issue, over three seeds.

(a) scikit-learn's Wisconsin breast-cancer data across 5 sites, Dirichlet(0.5) label skew, linear SVM
    with federated standardisation; (b) a synthetic CT cohort of 4 sites (4 scanners, Dirichlet(1.0)
    label skew), the small CNN. Each through Flower's simulation engine, against pooled training and
    each site alone, all scored on the pooled test set (``simulations.compare``).

Prints each table, the ratio federated / pooled against the targets (>= 0.99 for (a), >= 0.97 for (b))
and whether federated beats the mean local model; the load average is printed because the machine is
shared. Usage: python benchmarks/bench_compare.py [--only breast-cancer|synthetic-ct] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from common.config import RunConfig
from simulations.compare import COMPARE_METRICS, DATASETS, make_sites, run_compare
from simulations.partition import parse_partition

TARGETS = {"breast-cancer": 0.99, "synthetic-ct": 0.97}


def bench(dataset: str, seeds: list[int]) -> dict[str, object]:
    preset = DATASETS[dataset]
    with tempfile.TemporaryDirectory(prefix=f"fedscan-bench-{dataset}-") as tmp:
        started = time.time()
        sites = make_sites(
            dataset, Path(tmp) / "sites", preset.sites, parse_partition(preset.partition), seed=seeds[0]
        )
        config = dataclasses.replace(
            RunConfig(**preset.config),  # type: ignore[arg-type]
            image_size=sites.image_size,
            num_features=sites.num_features,
        )
        result = run_compare(list(sites.site_dirs), config, seeds, work_dir=Path(tmp) / "runs")
        summary = result.summary()
    summary.update(dataset=dataset, description=sites.description, seconds=round(time.time() - started, 1))
    summary["config"] = {k: v for k, v in config.to_flower().items() if k not in ("site-dirs", "out-dir")}
    return summary


def show(summary: dict) -> None:  # type: ignore[type-arg]
    print(f"\n== {summary['description']} ({summary['seconds']} s)")
    print(f"   test examples {summary['test_examples']}, train examples per site {summary['train_examples']}")
    print(f"   {'arm':<24}" + "".join(f"{m:>24}" for m in COMPARE_METRICS))
    for name, row in summary["rows"].items():
        print(
            f"   {name:<24}"
            + "".join(f"{row[m]['mean']:>16.4f} ± {row[m]['std']:.4f}" for m in COMPARE_METRICS)
        )
    ratio = summary["federated_over_pooled"]["accuracy"]
    margin = summary["federated_minus_local_mean"]["accuracy"]
    target = TARGETS[summary["dataset"]]
    verdict = "met" if ratio >= target else "NOT met"
    print(
        f"   federated / pooled accuracy {ratio:.4f} (target >= {target}: {verdict}); "
        f"federated - mean local {margin:+.4f} ({'met' if margin > 0 else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DATASETS), default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", type=Path, default=None, help="also write the summaries to this file")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"load average before: {os.getloadavg()}")
    summaries = [bench(name, seeds) for name in DATASETS if args.only in (None, name)]
    for summary in summaries:
        show(summary)
    print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2, default=float))


if __name__ == "__main__":
    main()
