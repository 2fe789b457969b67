"""Does each Flower adaptation earn its place? Deployed round time with all, each one left out, and stock.

The job is bench_deployment's (three synthetic CT hospitals, the demo's cohort and CNN, real
``flower-superlink`` and ``flower-supernode`` processes with TLS and node authentication), run

* on **loopback** (everything on 127.0.0.1), and on a **WAN** (each site in its own network namespace
  behind a ``tc tbf`` rate limit and a delaying TCP proxy: :mod:`benchmarks.wan`, default 100 Mbit/s and
  25 ms each way), each
* plain and with SecAgg+, in each
* configuration: ``all`` (fedscan's default), ``-NAME`` (every adaptation but NAME:
  ``FEDSCAN_FLOWER_WITHOUT``) and ``stock`` (none: ``FEDSCAN_FLOWER_RUNTIME=stock``, Flower's own
  isolation; the security gates stay on in every configuration).

A run's figure is the median round time over rounds 2..N (round 1 includes start-up). Runs are
interleaved: for each repetition, every (setting, kind, configuration) once, in a shuffled order, so
drift of the shared machine spreads over all configurations. The summary gives, per cell, the median and
range over repetitions, and each adaptation's saving: median(``-NAME``) - median(``all``), as a share of
median(``all``). The rule (docs/performance.md): an adaptation whose median saving is under 5% of a round
in both settings, or inside the run-to-run range, is removed.

Usage (root; the machine is shared): python benchmarks/bench_ablation.py [--runs 5] [--rounds 3]
    [--settings loopback wan] [--kinds plain secagg] [--configs all stock -held-answers ...]
    [--out results.jsonl] ; python benchmarks/bench_ablation.py --summarize results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_deployment import make_sites  # noqa: E402
from wan import WanSite, wan_sites  # noqa: E402

from client.site import SiteDir  # noqa: E402
from client.supernode import SiteKit, SiteNode, check_site  # noqa: E402
from common.config import RunConfig  # noqa: E402
from common.flower_runtime.adaptations import ADAPTATIONS, RUNTIME_ENV, WITHOUT_ENV  # noqa: E402
from common.flower_runtime.daemons import ProcessRef, free_port  # noqa: E402
from common.flower_runtime.wakeups import HOLD_SECONDS  # noqa: E402
from server.deployment import run_training  # noqa: E402
from server.run_records import read_round_records  # noqa: E402
from server.superlink import SuperLink  # noqa: E402
from simulations.local_federation import forget_publishers, provision_local_federation  # noqa: E402

#: Adaptations that act in a deployment (the simulation-only ones are measured by bench_federation).
DEPLOYED = tuple(n for n, a in ADAPTATIONS.items() if set(a.roles) - {"simulation"})
CONFIGS = ("all", "stock", *(f"-{n}" for n in DEPLOYED))


@contextlib.contextmanager
def configuration(name: str) -> Iterator[None]:
    """The environment of one configuration, for this process and every process it starts."""
    saved = {k: os.environ.get(k) for k in (RUNTIME_ENV, WITHOUT_ENV)}
    os.environ[RUNTIME_ENV] = "stock" if name == "stock" else "fedscan"
    os.environ[WITHOUT_ENV] = name[1:] if name.startswith("-") else ""
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def deploy(
    sites: list[SiteDir], config: RunConfig, root: Path, wan: list[WanSite] | None, port: int
) -> list[float]:
    for site in sites:
        forget_publishers(site)
    listen = "0.0.0.0" if wan else "127.0.0.1"
    names = [w.host_ip for w in wan] if wan else []  # the addresses sites dial must be in the certificate
    fed = provision_local_federation(
        sites, root / "fed", f"127.0.0.1:{port}", federation="ablation", extra_names=names
    )
    link = SuperLink(fed, listen_host=listen, max_wait=0.1, hold=HOLD_SECONDS)
    nodes: list[SiteNode] = []
    seen: list[ProcessRef] = []
    overrides = {k: v for k, v in config.to_flower().items() if k not in ("site-dirs", "out-dir")}
    try:
        link.start()
        link.sync_registrations()
        for i, site in enumerate(sites):
            kit = SiteKit.load(fed.site_kit(site.root.name))
            check_site(site, kit)
            node = SiteNode(
                site,
                kit,
                superlink=wan[i].superlink if wan else None,
                max_wait=0.2,
                hold=HOLD_SECONDS,
                command_prefix=wan[i].prefix() if wan else (),
            )
            nodes.append(node.start())
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
    return [r.round_seconds or 0.0 for r in read_round_records(root / "run")]


def steady(rounds: list[float]) -> float:
    return statistics.median(rounds[1:] or rounds)


def summarize(rows: list[dict]) -> str:  # type: ignore[type-arg]
    cells: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        cells.setdefault((row["setting"], row["kind"], row["config"]), []).append(row["round_s"])
    lines = []
    for setting in sorted({k[0] for k in cells}):
        for kind in sorted({k[1] for k in cells}):
            base = cells.get((setting, kind, "all"))
            if not base:
                continue
            base_median = statistics.median(base)
            spread = f"range {min(base):.2f}-{max(base):.2f}, n={len(base)}"
            lines.append(f"\n{setting}, {kind}: all = {base_median:.2f} s ({spread})")
            lines.append("| configuration | median s | range s | n | saving vs all |")
            lines.append("|---|---|---|---|---|")
            for config in CONFIGS:
                values = cells.get((setting, kind, config))
                if not values:
                    continue
                median = statistics.median(values)
                saving = (median - base_median) / base_median
                lines.append(
                    f"| {config} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | {len(values)} | "
                    f"{saving:+.1%} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slices", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--settings", nargs="*", default=["loopback", "wan"], choices=["loopback", "wan"])
    parser.add_argument("--kinds", nargs="*", default=["plain", "secagg"], choices=["plain", "secagg"])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--delay-ms", type=float, default=25.0)
    parser.add_argument("--out", type=Path, default=Path("ablation.jsonl"))
    parser.add_argument("--summarize", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.summarize:
        print(summarize([json.loads(line) for line in args.summarize.read_text().splitlines() if line]))
        return
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="fedscan-ablation-") as tmp:
        root = Path(tmp)
        sites = make_sites(root / "cohort", args.slices)
        cells = [(s, k, c) for s in args.settings for k in args.kinds for c in args.configs]
        for repetition in range(args.runs):
            order = cells[:]
            rng.shuffle(order)
            for n, (setting, kind, config_name) in enumerate(order):
                config = RunConfig(
                    num_server_rounds=args.rounds, model="cnn", local_epochs=args.epochs, optimizer="adam",
                    learning_rate=0.002, min_fit_sites=3, secure_aggregation=kind == "secagg",
                    site_dirs=tuple(str(s.root) for s in sites),
                )  # fmt: skip
                work = root / f"r{repetition}-{n}"
                port = free_port()
                started = time.monotonic()
                with configuration(config_name):
                    if setting == "wan":
                        with wan_sites(len(sites), port, proxy_port=free_port(), rate_mbit=args.rate_mbit,
                                       delay_ms=args.delay_ms) as wan:  # fmt: skip
                            rounds = deploy(sites, config, work, wan, port)
                    else:
                        rounds = deploy(sites, config, work, None, port)
                row = {
                    "repetition": repetition, "setting": setting, "kind": kind, "config": config_name,
                    "rounds_s": [round(r, 3) for r in rounds], "round_s": round(steady(rounds), 3),
                    "wall_s": round(time.monotonic() - started, 1), "load": os.getloadavg()[0],
                }  # fmt: skip
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(summarize([json.loads(line) for line in args.out.read_text().splitlines() if line]))


if __name__ == "__main__":
    main()
