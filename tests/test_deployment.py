"""Real deployment on 127.0.0.1: SuperLink + SuperNodes with TLS and node authentication.

Every process is real (flower-superlink, flower-supernode, fedscan's executors, the `fedscan` CLI),
ports are picked at run time, every wait has a timeout, and every process a test starts is ended by
PID in its teardown; each test checks that none is left.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client.ingest import ingest_folder
from client.site import SiteDir
from client.site_enrolment import enrol_site
from client.site_init import init_site
from client.supernode import SiteKit, SiteNode, check_site
from common.config import RunConfig
from common.crypto.pki import new_node_key, write_new_private_file
from common.enrolment import read_request
from common.errors import TrainingError
from common.flower_runtime.adaptations import RUNTIME_ENV
from common.flower_runtime.daemons import Daemon, ProcessRef, free_port
from common.models import model_from_config
from server.deployment import run_training
from server.provision import Federation, add_site, revoke_site
from server.run_records import read_round_records
from server.superlink import SuperLink, sync_running
from simulations.cohort import CohortSpec, generate_cohort
from simulations.local_federation import forget_publishers, provision_local_federation

pytestmark = pytest.mark.slow

RUN = {
    "num-server-rounds": 2,
    "secure-aggregation": True,
    "local-epochs": 1,
    "cnn-widths": "8,16",
    "batch-size": 16,
    "seed": 3,
}
SITES = ("site-1", "site-2", "site-3")


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> list[SiteDir]:
    """Three hospitals from the synthetic cohort, ingested into sealed stores (default policy: SecAgg+)."""
    root = tmp_path_factory.mktemp("cohort")
    spec = CohortSpec(n_sites=3, slices_per_site=24, seed=7, lesion_contrast_hu=250.0)
    out = []
    for cohort in generate_cohort(root / "pacs", spec):
        site = init_site(root / "sites" / cohort.site_id, cohort.site_id)
        report = ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=1)
        assert report.records_added > 0
        out.append(site)
    assert [s.root.name for s in out] == list(SITES)
    return out


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _assert_all_gone(refs: list[ProcessRef]) -> None:
    _wait_for(lambda: not any(r.alive for r in refs), 20, "every started process to exit")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "common.cli", *args]


@pytest.mark.parametrize("runtime", ["fedscan", "stock"])
def test_cli_provision_server_run_and_three_sites_train_two_secagg_rounds(
    sites: list[SiteDir], tmp_path: Path, runtime: str
) -> None:
    """The whole CLI path, with fedscan's adaptations of Flower and in stock mode (none of them: Flower's
    own code paths and isolation; the security gates stay on)."""
    env = {**os.environ, RUNTIME_ENV: runtime}
    fed_dir, out_dir = tmp_path / "fed", tmp_path / "run"
    port = free_port()
    requests = []
    for site in sites:  # each site enrols itself: its private keys never leave it
        forget_publishers(site)  # a site joining a new federation (other tests used other ones)
        request = tmp_path / f"{site.root.name}.json"
        enrolled = subprocess.run(
            _cli("site", "enrol", "--site-dir", str(site.root), "--out", str(request)),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stderr
        requests += ["--request", str(request)]
    provisioned = subprocess.run(
        _cli("server", "provision", "--federation", "it", "--sites", ",".join(SITES),
             "--superlink-address", f"127.0.0.1:{port}", "--out", str(fed_dir), *requests),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert provisioned.returncode == 0, provisioned.stderr
    sets = [a for key, value in RUN.items() for a in ("--set", f"{key}={str(value).lower()}")]
    server = Daemon(
        "server run",
        _cli("server", "run", "--kit", str(fed_dir / "server"), "--listen", "127.0.0.1", *sets,
             "--out-dir", str(out_dir), "--wait-for-sites", "240", "--timeout", "600"),
        tmp_path / "server.log",
        env,
    )  # fmt: skip
    site_runs: list[Daemon] = []
    seen: list[ProcessRef] = []
    try:
        server.start()
        _wait_for(lambda: "waiting for" in server.tail(50) or not server.running, 180, "the SuperLink")
        assert server.running, server.tail()
        for site in sites:
            kit = fed_dir / "sites" / site.root.name
            daemon = Daemon(
                f"site run {site.root.name}",
                _cli("site", "run", "--site-dir", str(site.root), "--kit", str(kit)),
                tmp_path / f"{site.root.name}.log",
                env,
            )
            site_runs.append(daemon.start())

        def finished() -> bool:
            for daemon in (server, *site_runs):
                seen.extend(daemon.processes())
            return not server.running

        _wait_for(finished, 600, "the training run", interval=1.0)
        assert server.exit_code == 0, server.tail(40)
        assert len({r.pid for r in seen}) >= 10  # CLI, SuperLink, executors, SuperNodes, task processes
    finally:
        for daemon in site_runs:  # SIGTERM: `fedscan site run` stops its SuperNode and executor
            seen.extend(daemon.processes())
            daemon.stop(timeout=30)
        seen.extend(server.processes())
        server.stop(timeout=30)
    _assert_all_gone(seen)
    for daemon in site_runs:
        assert daemon.exit_code == 130, daemon.tail()  # interrupted by us, cleanly
    rounds = read_round_records(out_dir)
    assert [r.round for r in rounds] == [1, 2]
    assert all(r.sites_fit == 3 and r.failures == 0 for r in rounds)
    with np.load(io.BytesIO((out_dir / "final_model.npz").read_bytes())) as npz:
        final = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    initial = model_from_config(RunConfig.from_flower({**RunConfig().to_flower(), **RUN})).get_arrays()
    assert len(final) == len(initial)
    assert any(not np.allclose(a, b) for a, b in zip(final, initial, strict=True)), "model did not change"
    log = server.log_file.read_text()
    assert "round 2:" in log and "finished:completed" in log
    assert (out_dir / "serverapp.log").stat().st_size > 0
    superlink_log = (fed_dir / "server" / "state" / "logs" / "superlink.log").read_text()
    supernode_log = (sites[0].root / "flower" / "logs" / "supernode.log").read_text()
    assert "security gates: flwr.superlink.main.create_app" in superlink_log  # on in both modes
    assert "security gates: flwr.supernode.start_client_internal" in supernode_log
    if runtime == "stock":
        assert "adaptations all off (stock mode)" in superlink_log
        assert "adaptations all off (stock mode)" in supernode_log
    else:
        assert "superlink: adaptations on: warm-executor, held-answers" in superlink_log


# ---- negative tests, sharing one live SuperLink ---------------------------------------------------


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, sites: list[SiteDir]
) -> Iterator[tuple[SuperLink, Federation]]:
    root = tmp_path_factory.mktemp("live")
    for site in sites:
        forget_publishers(site)
    fed = provision_local_federation(sites, root / "fed", f"127.0.0.1:{free_port()}", federation="neg")
    for site in sites:  # each site checks its kit once (and trusts the federation's publisher)
        check_site(site, SiteKit.load(fed.site_kit(site.root.name)))
    link = SuperLink(fed, listen_host="127.0.0.1")
    seen: list[ProcessRef] = []
    try:
        link.start()
        link.sync_registrations()
        yield link, fed
    finally:
        seen.extend(ref for d in link.daemons for ref in d.processes())
        link.stop()
    _assert_all_gone(seen)


def _start_and_wait_for_exit(node: SiteNode, argv: list[str], timeout: float) -> list[ProcessRef]:
    node.start(argv)
    seen: list[ProcessRef] = []

    def exited() -> bool:
        seen.extend(ref for d in node.daemons for ref in d.processes())
        return not node.running

    try:
        _wait_for(exited, timeout, f"{node.kit.site_id}'s SuperNode to give up")
    finally:
        node.stop()
    return seen


def test_an_unregistered_node_key_is_refused(live, sites: list[SiteDir], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    link, fed = live
    # Everything a site has (the CA, the address, a valid P-384 key), but a key the federation never
    # enrolled: Flower's own SuperNode, started with it directly (no fedscan check in the way).
    rogue = tmp_path / "rogue.key"
    write_new_private_file(rogue, new_node_key().private_openssh)
    node = SiteNode(sites[0], SiteKit.load(fed.site_kit("site-1")), isolation="subprocess", max_wait=None)
    argv = node.supernode_argv()
    argv[argv.index("--auth-supernode-private-key") + 1] = str(rogue)
    seen = _start_and_wait_for_exit(node, argv, timeout=120)
    _assert_all_gone(seen)
    assert node.daemons[0].exit_code != 0 and "Failed to activate SuperNode" in node.exit_reason()
    assert link.online_sites() == []
    assert '"POST /v1/fleet/activate-node HTTP/1.1" 412' in (link.logs / "superlink.log").read_text()


def test_a_revoked_site_is_unregistered_at_once_and_refused(  # type: ignore[no-untyped-def]
    live, sites: list[SiteDir], tmp_path: Path
) -> None:
    link, fed = live
    old_kit = tmp_path / "old-kit"
    shutil.copytree(fed.site_kit("site-2"), old_kit)  # what the site still holds after revocation
    fed = revoke_site(fed.root, "site-2")
    report = sync_running(fed)  # what `provision revoke-site` does with the SuperLink running
    assert report is not None and list(report.unregistered) == ["site-2"]
    node = SiteNode(sites[1], SiteKit.load(old_kit), isolation="subprocess", max_wait=None)
    seen = _start_and_wait_for_exit(node, node.supernode_argv(), timeout=120)
    _assert_all_gone(seen)
    assert node.daemons[0].exit_code != 0 and "Failed to activate SuperNode" in node.exit_reason()
    # Re-adding the site takes a new key of its own, registered at once; nothing else changes.
    others = {s: fed.site(s).fingerprint for s in ("site-1", "site-3")}  # type: ignore[union-attr]
    enrol_site(sites[1], tmp_path / "site-2-new.json", new_node_key=True)
    fed = add_site(fed.root, read_request(tmp_path / "site-2-new.json"))
    report = sync_running(fed)
    assert report is not None and list(report.registered) == ["site-2"]
    assert sorted(report.kept) == ["site-1", "site-3"]
    assert {s: fed.site(s).fingerprint for s in others} == others  # type: ignore[union-attr]
    link.fed = fed  # the live SuperLink serves the updated federation from here on


def test_a_node_without_the_ca_certificate_cannot_connect(live, sites: list[SiteDir]) -> None:  # type: ignore[no-untyped-def]
    link, fed = live
    node = SiteNode(sites[1], SiteKit.load(fed.site_kit("site-2")), isolation="subprocess", max_wait=None)
    argv = node.supernode_argv()
    i = argv.index("--root-certificates")
    argv = [*argv[:i], *argv[i + 2 :], "--max-retries", "2", "--max-wait-time", "20"]  # system CAs only
    seen = _start_and_wait_for_exit(node, argv, timeout=120)
    _assert_all_gone(seen)
    assert node.daemons[0].exit_code != 0
    assert "CERTIFICATE_VERIFY_FAILED" in node.daemons[0].log_file.read_text()
    assert link.online_sites() == []


def test_a_plaintext_connection_is_refused(live, sites: list[SiteDir]) -> None:  # type: ignore[no-untyped-def]
    link, fed = live
    node = SiteNode(sites[2], SiteKit.load(fed.site_kit("site-3")), isolation="subprocess", max_wait=None)
    argv = node.supernode_argv()
    for flag in ("--root-certificates", "--auth-supernode-private-key"):  # Flower refuses auth without TLS
        i = argv.index(flag)
        argv = [*argv[:i], *argv[i + 2 :]]
    argv += ["--insecure", "--max-retries", "2", "--max-wait-time", "20"]
    seen = _start_and_wait_for_exit(node, argv, timeout=120)
    _assert_all_gone(seen)
    assert node.daemons[0].exit_code != 0
    assert link.online_sites() == []
    nodes = link.flwr("supernode", "list", "fedscan").get("nodes", [])
    assert all(n["status"] != "online" for n in nodes)


def test_a_site_killed_mid_run_ends_the_run_clearly_never_hangs(  # type: ignore[no-untyped-def]
    live, sites: list[SiteDir], tmp_path: Path
) -> None:
    link, _ = live
    fed = link.fed  # as the revocation test left it
    nodes = [SiteNode(site, SiteKit.load(fed.site_kit(site.root.name))).start() for site in sites]
    seen: list[ProcessRef] = []
    killed: list[int] = []

    def kill_site_3(record) -> None:  # type: ignore[no-untyped-def]
        if record.round == 1 and not killed:
            for ref in (r for d in nodes[2].daemons for r in d.processes()):
                killed.append(ref.pid)
                ref.signal(signal.SIGKILL)

    started = time.monotonic()
    outcome = error = None
    try:
        try:
            outcome = run_training(
                link, {**RUN, "num-server-rounds": 3}, out_dir=tmp_path / "run",
                wait_for_sites=180, timeout=420, on_round=kill_site_3,
            )  # fmt: skip
        except TrainingError as exc:
            error = exc
    finally:
        for node in nodes:
            seen.extend(ref for d in node.daemons for ref in d.processes())
            node.stop()
    _assert_all_gone(seen)
    assert killed, f"round 1 never completed: {error}"
    assert time.monotonic() - started < 420
    if error is not None:  # failed: with the reason, not a timeout
        assert "did not finish within" not in str(error)
        assert "ended finished:failed" in str(error)
    else:
        assert outcome is not None and outcome.completed
    records = read_round_records(tmp_path / "run")
    assert records and records[0].sites_fit == 3
