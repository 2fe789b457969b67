"""The control plane, attacked with real processes: an outsider holding only ``ca.pem``, and a coordinator
pushing code.

The SuperLink listens on every interface; the attacker runs Flower's own ``flwr`` CLI (and raw HTTPS
requests) from another network namespace joined by a veth pair, so "not loopback" is real. Every attack
has its positive control in the same test: the same request from the coordinator's loopback, or the same
payload signed by the federation's publisher, does work; and the honest federation still trains, with one
site connecting from the other namespace. Every process a test starts is ended by PID; none is left.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.ingest import ingest_folder
from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_init import init_site
from client.supernode import SiteKit, SiteNode, check_site
from common.app_bundle import sign_app_dir
from common.app_identity import app_hash, source_digest
from common.crypto.pki import new_node_key
from common.crypto.signing import generate_signing_key, load_signing_key
from common.flower_runtime.daemons import ProcessRef, free_port
from common.flower_runtime.fab import build_fab
from server.coordinator_audit import coordinator_log_file
from server.deployment import run_training
from server.provision import Federation
from server.superlink import SuperLink
from simulations.cohort import CohortSpec, generate_cohort
from simulations.local_federation import provision_local_federation

pytestmark = pytest.mark.slow

SITES = ("site-1", "site-2", "site-3")

_EVIL_PYPROJECT = """[project]
name = "evil"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "evil"

[tool.flwr.app.components]
serverapp = "evil_app.server:app"
clientapp = "evil_app.client:app"

[tool.flwr.app.config]
"""

# Runs on the coordinator if a run is ever started with it: leaves a mark, then asks every site to run
# the ClientApp below.
_EVIL_SERVER = """from pathlib import Path
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid, ServerApp

MARKS = Path({marks!r})
app = ServerApp()


@app.main()
def main(grid: Grid, context) -> None:
    (MARKS / "server-ran").write_text("the coordinator ran an outsider's ServerApp")
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in grid.get_node_ids()]
    list(grid.send_and_receive(messages, timeout=90))
"""

# Runs at a site if the site ever runs the bundle: reads the site key and leaves a mark naming its hash.
_EVIL_CLIENT = """import hashlib
from pathlib import Path
from flwr.app import Message, RecordDict
from flwr.clientapp import ClientApp

MARKS = Path({marks!r})
app = ClientApp()


@app.query()
def steal(message, context):
    site = Path(str(context.node_config["site-dir"]))
    key = (site / "keys" / "site.key").read_bytes()
    (MARKS / f"{{site.name}}-ran").write_text(hashlib.sha256(key).hexdigest())
    return Message(RecordDict(), reply_to=message)
"""


def _evil_app(root: Path, marks: Path) -> Path:
    app = root / "evil-app"
    (app / "evil_app").mkdir(parents=True)
    (app / "pyproject.toml").write_text(_EVIL_PYPROJECT)
    (app / "evil_app" / "__init__.py").write_text("")
    (app / "evil_app" / "server.py").write_text(_EVIL_SERVER.format(marks=str(marks)))
    (app / "evil_app" / "client.py").write_text(_EVIL_CLIENT.format(marks=str(marks)))
    return app


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> list[SiteDir]:
    root = tmp_path_factory.mktemp("cohort")
    spec = CohortSpec(n_sites=3, slices_per_site=24, seed=11, lesion_contrast_hu=250.0)
    out = []
    for cohort in generate_cohort(root / "pacs", spec):
        site = init_site(root / "sites" / cohort.site_id, cohort.site_id)
        assert ingest_folder(site, cohort.dicom_dir, cohort.labels_csv, workers=1).records_added > 0
        out.append(site)
    assert [s.root.name for s in out] == list(SITES)
    return out


class Coordinator:
    """The federation, its SuperLink on every interface (state in a database file), and the sites."""

    def __init__(self, fed: Federation, root: Path) -> None:
        self.fed, self.root = fed, root
        self.database = root / "superlink.db"
        self.link: SuperLink | None = None
        self.seen: list[ProcessRef] = []

    def start(self) -> SuperLink:
        self.link = SuperLink(self.fed, listen_host="0.0.0.0", database=self.database).start()
        self.link.sync_registrations()
        return self.link

    def stop(self) -> None:
        if self.link is not None:
            self.seen.extend(ref for d in self.link.daemons for ref in d.processes())
            self.link.stop()
            self.link = None


@pytest.fixture(scope="module")
def coordinator(  # type: ignore[no-untyped-def]
    sites: list[SiteDir], netns, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Coordinator]:
    root = tmp_path_factory.mktemp("coordinator")
    fed = provision_local_federation(sites, root / "fed", f"{netns.host_ip}:{free_port()}", federation="cp")
    for site in sites:
        check_site(site, SiteKit.load(fed.site_kit(site.root.name)))  # each site trusts the publisher
    coordinator = Coordinator(fed, root)
    try:
        coordinator.start()
        yield coordinator
    finally:
        coordinator.stop()
        _wait_for(lambda: not any(r.alive for r in coordinator.seen), 30, "the SuperLink's processes to exit")


def _outsider_home(coordinator: Coordinator, root: Path) -> Path:
    """What an outsider holds: a FLWR_HOME whose one connection points at the SuperLink, and ca.pem."""
    home = root / "outsider"
    home.mkdir(mode=0o700)
    shutil.copy(coordinator.fed.site_kit("site-1") / "ca.pem", home / "ca.pem")
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "target"\n\n[superlink.target]\naddress = "{coordinator.fed.superlink}"\n'
        f'root-certificates = "{home / "ca.pem"}"\n'
    )
    return home


def _outsider_flwr(netns, home: Path, *args: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    env = {**os.environ, "FLWR_HOME": str(home)}
    flwr = str(Path(sys.executable).parent / "flwr")
    done = subprocess.run(
        netns.command(flwr, *args, "target", "--format", "json"),
        env=env, capture_output=True, text=True, timeout=120, cwd=home,
    )  # fmt: skip
    text = done.stdout
    return json.loads(text[text.index("{") :]) if "{" in text else {"success": False, "raw": done.stderr}


def _outsider_https(netns, ca: Path, url: str, method: str = "POST") -> int:  # type: ignore[no-untyped-def]
    code = (
        "import ssl, sys, urllib.request, urllib.error\n"
        f"ctx = ssl.create_default_context(cafile={str(ca)!r})\n"
        f"data = b'' if {method!r} == 'POST' else None\n"
        f"req = urllib.request.Request({url!r}, data=data, method={method!r},"
        " headers={'Content-Type': 'application/protobuf'})\n"
        "try:\n    print(urllib.request.urlopen(req, context=ctx, timeout=20).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    command = netns.command(sys.executable, "-c", code)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return int(done.stdout.strip() or 0)


def test_an_outsider_with_only_the_ca_cannot_use_the_control_or_runtime_api(  # type: ignore[no-untyped-def]
    coordinator: Coordinator, netns, tmp_path: Path
) -> None:
    link = coordinator.link
    assert link is not None
    home = _outsider_home(coordinator, tmp_path)
    marks = tmp_path / "marks"
    marks.mkdir()
    before = link.registered_nodes()
    site_1 = next(n for n, s in link.site_of_node().items() if s == "site-1")
    rogue = tmp_path / "rogue.pub"
    rogue.write_bytes(new_node_key().public_openssh)

    # 1. register a rogue node, unregister a site, list nodes and runs, run a bundle: all refused.
    for args in (
        ("supernode", "register", str(rogue)),
        ("supernode", "unregister", str(site_1)),
        ("supernode", "list"),
        ("list",),
        ("run", str(_evil_app(tmp_path, marks))),
    ):
        answer = _outsider_flwr(netns, home, *args)
        assert not answer.get("success"), (args, answer)
        assert "only the Fleet API" in json.dumps(answer), (args, answer)
    time.sleep(2)  # a run, had one started, would have reached its ServerApp by now
    assert not (marks / "server-ran").exists()
    assert link.registered_nodes() == before  # nothing registered, nothing unregistered
    assert link.flwr("list", "fedscan").get("runs", []) == []  # no run was started
    # Raw requests: Control, Runtime (the ServerApp executor's API), health and API docs all refused;
    # a Fleet route is reached (Flower answers it: here with its own refusal of an empty request).
    base = f"https://{coordinator.fed.superlink}"
    ca = home / "ca.pem"
    for path in ("/v1/control/start-run", "/v1/runtime/acquire-task", "/v1/fleet/register-node"):
        assert _outsider_https(netns, ca, base + path) == 403, path
    for path in ("/docs", "/openapi.json", "/health"):
        assert _outsider_https(netns, ca, base + path, method="GET") == 403, path
    assert _outsider_https(netns, ca, base + "/v1/fleet/get-run") not in (403, 0)

    # Positive control: the coordinator's own CLI, on its loopback, lists the same nodes.
    assert sorted(int(n["node-id"]) for n in link.flwr("supernode", "list", "fedscan")["nodes"]) == before


def test_a_registration_nobody_provisioned_is_removed_at_the_next_start(coordinator: Coordinator) -> None:
    link = coordinator.link
    assert link is not None
    kit_nodes = sorted(link.site_of_node())
    # What the open Control API used to allow an outsider, done here from the coordinator's loopback
    # (the only place it still works): a rogue key registered in the SuperLink's database.
    rogue = coordinator.root / "rogue.pub"
    rogue.write_bytes(new_node_key().public_openssh)
    body = link.flwr("supernode", "register", str(rogue), "fedscan")
    rogue_id = int(body["node-id"])
    assert rogue_id in link.registered_nodes()
    coordinator.stop()
    link = coordinator.start()  # same database: the rogue registration survived the restart...
    assert rogue_id not in link.registered_nodes()  # ...until the start's sync removed it
    assert link.registered_nodes() == kit_nodes  # exactly the kit's sites, kept as they were
    lines = coordinator_log_file(coordinator.fed).read_text().splitlines()
    synced = [json.loads(line) for line in lines if '"registrations.sync"' in line]
    assert synced and synced[-1]["details"]["removed_unknown"] == 1


def _start_sites(coordinator: Coordinator, sites: list[SiteDir], netns) -> list[SiteNode]:  # type: ignore[no-untyped-def]
    """site-1 from the other namespace (Flower's subprocess isolation: its children stay in there),
    site-2 and site-3 here with fedscan's warm executor."""
    link = coordinator.link
    assert link is not None
    nodes = []
    for site in sites:
        kit = SiteKit.load(coordinator.fed.site_kit(site.root.name))
        if site.root.name == "site-1":
            node = SiteNode(site, kit, isolation="subprocess", max_wait=None)
            nodes.append(node.start(netns.command(*node.supernode_argv())))
        else:
            nodes.append(SiteNode(site, kit).start())
    _wait_for(lambda: link.online_sites() == list(SITES), 180, "the three sites to connect", interval=2)
    return nodes


def _stop_sites(nodes: list[SiteNode], coordinator: Coordinator) -> None:
    for node in nodes:
        coordinator.seen.extend(ref for d in node.daemons for ref in d.processes())
        node.stop()


def _run_bundle(link: SuperLink, app: Path) -> None:
    """Start a run of ``app`` from the coordinator's loopback and wait until it has finished."""
    run_id = int(link.flwr("run", str(app), "fedscan")["run-id"])

    def finished() -> bool:
        runs = link.flwr("list", "--run-id", str(run_id), "fedscan").get("runs", [])
        return bool(runs) and str(runs[0].get("status", "")).startswith("finished")

    _wait_for(finished, 240, f"run {run_id} to finish", interval=2)


def _bundle_events(site: SiteDir) -> list[dict]:  # type: ignore[type-arg]
    lines = (site.root / "audit" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"bundle.' in line]


def test_sites_run_only_bundles_they_approved_and_the_honest_run_still_trains(  # type: ignore[no-untyped-def]
    coordinator: Coordinator, sites: list[SiteDir], netns, tmp_path: Path
) -> None:
    link = coordinator.link
    assert link is not None
    marks = tmp_path / "marks"
    marks.mkdir()
    app = _evil_app(tmp_path, marks)
    # site-1 has reviewed this code and approved its app hash (and its installed fedscan's): a signed
    # bundle carrying code runs only where the site approved it or pinned the bundle.
    reviewed = source_digest((p.relative_to(app).as_posix(), p.read_bytes()) for p in app.rglob("*.py"))
    config = SiteConfig.load(sites[0].config_file)
    policy = dataclasses.replace(config.policy, approved_app_hashes=(reviewed, app_hash()))
    sites[0].config_file.write_text(dataclasses.replace(config, policy=policy).to_toml())
    nodes = _start_sites(coordinator, sites, netns)
    try:
        # 2a. The coordinator pushes an unsigned bundle that reads the site key: no site runs it.
        _run_bundle(link, app)
        unsigned = hashlib.sha256(build_fab(app)).hexdigest()
        assert (marks / "server-ran").exists()  # the coordinator ran what it chose to run...
        assert sorted(p.name for p in marks.iterdir()) == ["server-ran"]  # ...but no site did
        for site in sites:
            refused = [e["details"] for e in _bundle_events(site) if e["event"] == "bundle.refused"]
            assert {"bundle_sha256": unsigned, "reason": "unsigned"}.items() <= refused[-1].items()
        # 2b. The same bundle signed with a key no site trusts: refused again, named by its hash.
        forged = sign_app_dir(app, generate_signing_key(), coordinator.fed.name)
        _run_bundle(link, app)
        assert sorted(p.name for p in marks.iterdir()) == ["server-ran"]
        for site in sites:
            last = _bundle_events(site)[-1]
            assert last["event"] == "bundle.refused" and last["details"]["reason"] == "untrusted-publisher"
            assert last["details"]["bundle_sha256"] == forged.fab_sha256
        # Positive control: the same payload signed by the federation's publisher runs where the site
        # runs bundle code (site-1, Flower's subprocess isolation), and nowhere the site runs only its
        # installed fedscan (site-2 and site-3, warm executor: refused as carrying code).
        signed = sign_app_dir(app, load_signing_key(coordinator.fed.publisher_key), coordinator.fed.name)
        _run_bundle(link, app)
        _wait_for(lambda: (marks / "site-1-ran").exists(), 30, "site-1 to run the signed bundle")
        key_digest = hashlib.sha256(sites[0].site_key_file.read_bytes()).hexdigest()
        assert (marks / "site-1-ran").read_text() == key_digest
        assert not (marks / "site-2-ran").exists() and not (marks / "site-3-ran").exists()
        assert _bundle_events(sites[0])[-1]["event"] == "bundle.accepted"
        assert _bundle_events(sites[0])[-1]["details"]["bundle_sha256"] == signed.fab_sha256
        for site in sites[1:]:
            assert _bundle_events(site)[-1]["details"]["reason"] == "code-not-allowed"

        # The honest run: fedscan's own signed bundle trains, site-1 connecting from outside.
        outcome = run_training(
            link, {"num-server-rounds": 1, "cnn-widths": "8,16", "batch-size": 16, "seed": 5},
            out_dir=tmp_path / "run", wait_for_sites=120, timeout=600,
        )  # fmt: skip
        assert outcome.completed and outcome.rounds and outcome.rounds[0].sites_fit == 3
        for site in sites:
            assert _bundle_events(site)[-1]["event"] == "bundle.accepted"
            assert SiteConfig.load(site.config_file).policy.trusted_publishers  # unchanged trust
    finally:
        _stop_sites(nodes, coordinator)
