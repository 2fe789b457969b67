"""Measured privacy: membership-inference AUC and accuracy against epsilon, on the two tasks of #6.

For each task, the same sites, splits and seeds (``simulations.compare``'s presets): (a) breast cancer
across 5 sites, Dirichlet(0.5), linear SVM with federated standardisation; (b) a synthetic CT cohort of
4 sites, the small CNN. Each is trained through Flower's simulation engine under SecAgg+ (the default)
with sample-level DP-SGD at every site calibrated to epsilon in {1, 3, 8} (each site calibrates its own
noise for the whole run at ``dp-delta`` 1e-5), and without DP ("none"). On the final federated model:

* accuracy on the pooled test set (the union of the sites' held-out splits);
* a loss-threshold membership-inference attack (``simulations.membership_inference``): AUC and best
  accuracy of telling the sites' training records from as many held-out records;
* the largest epsilon a site reports for the run (its own RDP accountant), which must not exceed the
  target.

Targets: at epsilon 3 the breast-cancer SVM loses <= 3 accuracy points against no DP; MIA AUC <= 0.55
at epsilon <= 3. Prints the table (mean over seeds), the verdicts, and writes the trade-off curve
(``--png``, default ``privacy_tradeoff.png``). Run under the shared lock:
``flock /tmp/fedscan-heavy.lock python benchmarks/bench_privacy.py``.
Usage: python benchmarks/bench_privacy.py [--tasks breast-cancer,synthetic-ct] [--seeds 0,1,2]
       [--cnn-seeds 0] [--cnn-rounds 15] [--png FILE] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common.config import RunConfig
from common.models import LabelledArrays, model_from_config
from server.run_records import MODEL_FILE, read_round_records
from simulations.compare import DATASETS, load_sites, make_sites
from simulations.membership_inference import loss_threshold_attack
from simulations.partition import parse_partition
from simulations.runtime import run_federation

EPSILONS: list[float | None] = [1.0, 3.0, 8.0, None]
# DP-SGD's own settings per task (clipping norm; the rest is the task's preset).
DP_SETTINGS: dict[str, dict[str, object]] = {
    "breast-cancer": {"sample_dp_clip": 1.0},
    "synthetic-ct": {"sample_dp_clip": 1.0},
}


def _final_model(config: RunConfig, run_dir: Path):  # type: ignore[no-untyped-def]
    model = model_from_config(config)
    with np.load(run_dir / MODEL_FILE) as npz:
        model.set_arrays([npz[f"arr_{i}"] for i in range(len(npz.files))])
    return model


def run_task(
    task: str,
    seeds: list[int],
    rounds: int | None,
    work: Path,
    epsilons: list[float | None] = EPSILONS,
    dp_overrides: dict[str, object] | None = None,
) -> list[dict[str, object]]:
    preset = DATASETS[task]
    rows: list[dict[str, object]] = []
    for seed in seeds:
        sites = make_sites(
            task, work / f"{task}-{seed}", preset.sites, parse_partition(preset.partition), seed=seed
        )
        data = load_sites(list(sites.site_dirs))
        members = LabelledArrays.concat([s.train for s in data])
        non_members = LabelledArrays.concat([s.test for s in data])
        base = dataclasses.replace(
            RunConfig(**preset.config),  # type: ignore[arg-type]
            image_size=sites.image_size,
            num_features=sites.num_features,
            site_dirs=tuple(str(p) for p in sites.site_dirs),
            min_fit_sites=len(sites.site_dirs),
            seed=seed,
            checkpoints=False,
        )
        if rounds:
            base = dataclasses.replace(base, num_server_rounds=rounds)
        for epsilon in epsilons:
            dp = (
                {"sample_dp": True, "sample_dp_epsilon": epsilon, **DP_SETTINGS[task], **(dp_overrides or {})}
                if epsilon
                else {}
            )
            run_dir = work / f"{task}-{seed}-eps-{epsilon or 'none'}"
            config = dataclasses.replace(base, out_dir=str(run_dir), **dp)  # type: ignore[arg-type]
            started = time.time()
            run_federation(config.to_flower(), num_sites=len(sites.site_dirs))
            seconds = time.time() - started
            model = _final_model(config, run_dir)
            attack = loss_threshold_attack(model, members, non_members, seed=seed)
            last = read_round_records(run_dir)[-1]
            row = {
                "task": task,
                "seed": seed,
                "epsilon": epsilon,
                "reported_epsilon": last.privacy.get("epsilon_sample_max"),
                "accuracy": model.evaluate(non_members).accuracy,
                "mia_auc": attack.auc,
                "mia_best_accuracy": attack.best_accuracy,
                "records_per_side": attack.records_per_side,
                "seconds": round(seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summarise(rows: list[dict[str, object]]) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, float]]] = {}
    for task in dict.fromkeys(str(r["task"]) for r in rows):
        table[task] = {}
        for epsilon in EPSILONS:
            mine = [r for r in rows if r["task"] == task and r["epsilon"] == epsilon]
            if not mine:
                continue
            table[task][str(epsilon or "none")] = {
                key: float(statistics.mean(float(r[key]) for r in mine))  # type: ignore[arg-type]
                for key in ("accuracy", "mia_auc", "mia_best_accuracy")
            } | {
                "accuracy_std": float(statistics.pstdev(float(r["accuracy"]) for r in mine)),  # type: ignore[arg-type]
                "mia_auc_std": float(statistics.pstdev(float(r["mia_auc"]) for r in mine)),  # type: ignore[arg-type]
                "max_reported_epsilon": max(
                    (float(r["reported_epsilon"]) for r in mine if r["reported_epsilon"] is not None),  # type: ignore[arg-type]
                    default=float("nan"),
                ),
                "runs": len(mine),
            }
    return table


def verdicts(table: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    out = []
    bc = table.get("breast-cancer", {})
    if "3.0" in bc and "none" in bc:
        loss = 100 * (bc["none"]["accuracy"] - bc["3.0"]["accuracy"])
        out.append(
            f"breast-cancer SVM at epsilon 3 loses {loss:.1f} accuracy points against no DP "
            f"(target <= 3): {'met' if loss <= 3 else 'MISSED'}"
        )
    for task, rows in table.items():
        for eps in ("1.0", "3.0"):
            if eps in rows:
                auc = rows[eps]["mia_auc"]
                out.append(
                    f"{task} membership-inference AUC at epsilon {eps}: {auc:.3f} (target <= 0.55): "
                    f"{'met' if auc <= 0.55 else 'MISSED'}"
                )
    return out


def plot(table: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["1", "3", "8", "none"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for task, rows in table.items():
        keys = [k for k in ("1.0", "3.0", "8.0", "none") if k in rows]
        xs = [labels[("1.0", "3.0", "8.0", "none").index(k)] for k in keys]
        axes[0].errorbar(
            xs,
            [rows[k]["accuracy"] for k in keys],
            yerr=[rows[k]["accuracy_std"] for k in keys],
            marker="o",
            label=task,
        )
        axes[1].errorbar(
            xs,
            [rows[k]["mia_auc"] for k in keys],
            yerr=[rows[k]["mia_auc_std"] for k in keys],
            marker="o",
            label=task,
        )
    axes[0].set(
        title="Utility", xlabel="epsilon (sample level, per site)", ylabel="accuracy (pooled test set)"
    )
    axes[1].axhline(0.5, color="grey", linestyle=":", label="coin toss")
    axes[1].axhline(0.55, color="red", linestyle="--", label="target at epsilon <= 3")
    axes[1].set(title="Membership inference", xlabel="epsilon (sample level, per site)", ylabel="attack AUC")
    for axis in axes:
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle("fedscan: privacy / utility trade-off (SecAgg+ and DP-SGD, Flower simulation)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="breast-cancer,synthetic-ct")
    parser.add_argument("--seeds", default="0,1,2", help="seeds for the breast-cancer task")
    parser.add_argument("--cnn-seeds", default="0", help="seeds for the synthetic-CT task (slower)")
    parser.add_argument("--cnn-rounds", type=int, default=0, help="override the CNN preset's rounds")
    parser.add_argument("--epsilons", default="1,3,8,none", help="targets to run, e.g. 3,none")
    parser.add_argument(
        "--dp-set", action="append", default=[], help="run-config override for the DP runs: KEY=VALUE"
    )
    parser.add_argument("--png", default="privacy_tradeoff.png")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    epsilons = [None if e == "none" else float(e) for e in args.epsilons.split(",")]
    overrides = {
        k.replace("-", "_"): json.loads(v) if v[:1] in "0123456789-[{tf" else v
        for k, v in (item.split("=", 1) for item in args.dp_set)
    }
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="fedscan-bench-privacy-") as tmp:
        for task in args.tasks.split(","):
            seeds = args.cnn_seeds if task == "synthetic-ct" else args.seeds
            rounds = args.cnn_rounds if task == "synthetic-ct" else 0
            rows += run_task(
                task, [int(s) for s in seeds.split(",")], rounds or None, Path(tmp), epsilons, overrides
            )
    table = summarise(rows)
    plot(table, Path(args.png))
    result = {
        "table": table,
        "verdicts": verdicts(table),
        "png": str(Path(args.png).resolve()),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for task, per_eps in table.items():
        print(f"\n== {task}")
        print(
            f"{'epsilon':>8} {'accuracy':>14} {'MIA AUC':>14} {'MIA best acc':>13} {'site eps max':>13} runs"
        )
        for eps, r in per_eps.items():
            print(
                f"{eps:>8} {r['accuracy']:>8.4f}+-{r['accuracy_std']:.3f}"
                f" {r['mia_auc']:>8.4f}+-{r['mia_auc_std']:.3f}"
                f" {r['mia_best_accuracy']:>13.4f} {r['max_reported_epsilon']:>13.3f} {int(r['runs'])}"
            )
    print()
    for line in result["verdicts"]:  # type: ignore[attr-defined]
        print(line)
    print(
        f"trade-off curve: {result['png']}; "
        f"load average {result['load_average_before']} -> {result['load_average_after']}"
    )


if __name__ == "__main__":
    main()
