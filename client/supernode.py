"""``fedscan site run``: check the site, then run its Flower SuperNode, connected out to the SuperLink.

Before anything starts, :func:`check_site` refuses a site that is not ready, with the reason: the kit's
node key must be a regular file of this user with mode 0600 and match the registered public key, its
CA certificate must be the one the kit names, ``site.toml`` must load (the site's policy included) and
name the same site as the kit, the site key must pass its own checks and the store must hold data.

Then :class:`SiteNode` starts ``flower-supernode`` with the kit's CA certificate (the SuperLink's TLS
certificate is verified against it), the node key (SuperNode authentication), its own Runtime API port
on 127.0.0.1, and a node config naming the site directory; the ClientApp opens the store from there.
The site only connects out: no inbound port is opened (the Runtime API listens on loopback only).

Isolation, as on the server (``docs/deployment.md`` has the measurements): ``warm`` (default) runs the
SuperNode with ``--isolation process``, a SuperExec secret, fedscan's pre-warmed executor
(:mod:`common.warm_exec`) and idle polls capped (:mod:`common.flower_polling`); with ``hold`` (the
default) the SuperNode holds its executor's empty ``AcquireTask`` answers until a task arrives and asks
the SuperLink again at once after a held answer (:mod:`common.flower_wakeups`); ``process`` uses
Flower's ``flower-superexec`` instead of the warm executor; ``subprocess`` is Flower's default.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_init import load_site_key
from client.store import read_manifest
from common.crypto.pki import certificate_info, node_key_fingerprint, node_public_key, read_private_file
from common.daemons import Daemon, flower_environment, free_port
from common.errors import ConfigError, InputError, KeyMaterialError, PolicyError, StoreError, TrainingError
from common.flower_wakeups import HOLD_SECONDS
from common.fsio import write_atomic, write_private_atomic

__all__ = ["ISOLATIONS", "SiteKit", "SiteNode", "check_site", "run_site", "warm_up"]

ISOLATIONS = ("warm", "process", "subprocess")


@dataclass(frozen=True)
class SiteKit:
    """A site kit written by ``fedscan server provision`` (``kit.toml``, ``ca.pem``, ``node.key``)."""

    root: Path
    federation: str
    superlink: str
    site_id: str
    fingerprint: str
    ca_sha256: str

    @property
    def ca_certificate(self) -> Path:
        return self.root / "ca.pem"

    @property
    def node_key(self) -> Path:
        return self.root / "node.key"

    @property
    def node_public_key(self) -> Path:
        return self.root / "node.pub"

    @classmethod
    def load(cls, root: Path) -> SiteKit:
        """Read ``root/kit.toml``; InputError naming the file if it is missing or malformed."""
        root = Path(root).resolve()
        path = root / "kit.toml"
        try:
            raw = tomllib.loads(path.read_text())
            return cls(
                root=root,
                federation=str(raw["federation"]["name"]),
                superlink=str(raw["federation"]["superlink"]),
                site_id=str(raw["site"]["id"]),
                fingerprint=str(raw["site"]["fingerprint"]),
                ca_sha256=str(raw["federation"]["ca_sha256"]),
            )
        except FileNotFoundError:
            raise InputError(
                f"{root} is not a site kit (no kit.toml); use the folder the coordinator sent."
            ) from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as error:
            raise InputError(f"{path} is malformed ({error!r}).") from None


def check_site(site: SiteDir, kit: SiteKit) -> SiteConfig:
    """Refuse to start a site that is not ready; return its configuration (policy included).

    Raises
    ------
    KeyMaterialError
        The node key or the site key is missing, unsafe (mode, owner, symlink) or does not match.
    PolicyError
        The kit is for another site.
    InputError
        The CA certificate is missing or not the one the kit names.
    StoreError
        The site's store holds no data yet (or does not open under the site key).
    """
    private = read_private_file(kit.node_key)
    if not kit.node_public_key.exists():
        raise KeyMaterialError(f"{kit.node_public_key} is missing from the kit.")
    public = node_public_key(private)
    if node_key_fingerprint(public) != kit.fingerprint:
        raise KeyMaterialError(
            f"{kit.node_key} is not the key registered for site {kit.site_id} "
            f"(fingerprint {node_key_fingerprint(public)}, kit says {kit.fingerprint})."
        )
    try:
        ca = kit.ca_certificate.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{kit.ca_certificate} is missing: without it the SuperLink cannot be verified."
        ) from None
    if certificate_info(ca).sha256 != kit.ca_sha256:
        raise InputError(f"{kit.ca_certificate} is not the federation's CA certificate named in kit.toml.")
    config = SiteConfig.load(site.config_file)  # validates the site's policy as well
    if config.site_id != kit.site_id:
        raise PolicyError(
            f"The kit in {kit.root} is for site {kit.site_id!r}, but {site.config_file} is site "
            f"{config.site_id!r}; use this site's own kit."
        )
    key = load_site_key(site)  # the site key's own checks (mode 0600, owner)
    if not site.store_dir.exists() or not any(site.store_dir.iterdir()):
        raise StoreError(f"{site.store_dir} holds no data: run `fedscan site ingest` first.")
    if not read_manifest(site.store_dir, key).records:  # opens under this key, in memory
        raise StoreError(f"{site.store_dir} holds no records: run `fedscan site ingest` first.")
    return config


def warm_up() -> None:
    """Warm a ClientApp interpreter before it forks: imports, and one tiny training on random data.

    Torch's first training step in a process costs about 1.5 s here (lazy imports, kernel set-up);
    paying it once in the warm executor means no message pays it. One thread only, so no OpenMP
    thread pool exists before a fork. No site data is touched.

    The app hash (:func:`common.app_identity.app_hash`, a digest of ~100 source files that the
    policy and audit mods name in every message) is computed here, once: every task forked from this
    interpreter runs the code imported now, and it cost each task ~8 ms of CPU (more on a busy machine).
    """
    import numpy as np
    import torch

    import client.client_app  # noqa: F401 - the ClientApp the tasks will load
    from client.training import train_locally
    from common.app_identity import app_hash
    from common.config import RunConfig
    from common.models import LabelledArrays, model_from_config

    app_hash()  # cached: the forked tasks inherit it
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for config in (RunConfig(image_size=16, cnn_widths="4"), RunConfig(model="svm", image_size=16)):
        model = model_from_config(config)
        data = LabelledArrays(rng.random((8, 16, 16), dtype=np.float32), np.array([0, 1] * 4))
        train_locally(model, data, config, 1)
        model.evaluate(data)


@dataclass
class SiteNode:
    """The site's SuperNode and, in the process modes, the executor that runs its ClientApps."""

    site: SiteDir
    kit: SiteKit
    superlink: str | None = None
    isolation: str = "warm"
    max_wait: float | None = 0.2
    hold: float | None = HOLD_SECONDS
    runtime_port: int | None = None
    max_wait_time: float | None = None
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise ConfigError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {self.isolation!r}.")

    @property
    def home(self) -> Path:
        """Flower's home for this site (installed app manifests, logs, the SuperExec secret)."""
        return self.site.root / "flower"

    def supernode_argv(self) -> list[str]:
        """The ``flower-supernode`` command (through the poll-capping launcher when ``max_wait``)."""
        bin_dir = Path(sys.executable).parent
        node_config = self.home / "node-config.toml"
        write_atomic(node_config, f"site-dir = {json.dumps(str(self.site.root.resolve()))}\n".encode())
        if self.runtime_port is None:
            self.runtime_port = free_port()
        args = [
            "--superlink", self.superlink or self.kit.superlink,
            "--root-certificates", str(self.kit.ca_certificate),
            "--auth-supernode-private-key", str(self.kit.node_key),
            "--node-config", str(node_config),
            "--host", "127.0.0.1",
            "--port", str(self.runtime_port),
        ]  # fmt: skip
        if self.max_wait_time is not None:
            args += ["--max-wait-time", str(self.max_wait_time)]
        if self.isolation != "subprocess":
            args += ["--isolation", "process", "--superexec-auth-secret-file", str(self._secret())]
        if self.max_wait is not None:
            hold = ["--hold", str(self.hold)] if self.hold else []
            return [sys.executable, "-m", "common.flower_polling", "--max-wait", str(self.max_wait), *hold,
                    "flower-supernode", *args]  # fmt: skip
        return [str(bin_dir / "flower-supernode"), *args]

    def _secret(self) -> Path:
        path = self.home / "superexec.secret"
        if not path.exists():
            write_private_atomic(path, secrets.token_bytes(32))
        return path

    def start(self, argv: list[str] | None = None) -> SiteNode:
        """Start the SuperNode (``argv`` overrides its command, for tests) and its executor."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        env = flower_environment(self.home)
        command = argv if argv is not None else self.supernode_argv()
        node = Daemon(f"SuperNode {self.kit.site_id}", command, self.home / "logs" / "supernode.log", env)
        self.daemons.append(node.start())
        if self.isolation != "subprocess":
            self.daemons.append(self._executor(node.pid).start())
        return self

    def _executor(self, node_pid: int) -> Daemon:
        runtime = f"127.0.0.1:{self.runtime_port}"
        log = self.home / "logs" / "executor.log"
        if self.isolation == "process":
            argv = [
                str(Path(sys.executable).parent / "flower-superexec"),
                "--runtime-api-address", runtime, "--insecure",
                "--superexec-auth-secret-file", str(self._secret()),
                "--parent-pid", str(node_pid),
            ]  # fmt: skip
            env = flower_environment(self.home, {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"})
            return Daemon(f"SuperExec {self.kit.site_id}", argv, log, env)
        argv = [
            sys.executable, "-m", "common.warm_exec",
            "--runtime-api-address", runtime, "--task-type", "flwr-clientapp", "--insecure",
            "--auth-secret-file", str(self._secret()),
            "--parent-pid", str(node_pid),
            "--warm-up", "client.supernode:warm_up",
        ]  # fmt: skip
        if self.max_wait is not None:
            argv += ["--max-wait", str(self.max_wait)]
            if self.hold:  # the SuperNode holds an empty AcquireTask answer: ask again at once
                argv += ["--poll-interval", "0.01"]
        return Daemon(f"ClientApp executor {self.kit.site_id}", argv, log, flower_environment(self.home))

    @property
    def running(self) -> bool:
        """Whether the SuperNode and its executor (if any) all still run."""
        return bool(self.daemons) and all(d.running for d in self.daemons)

    def processes(self) -> list[int]:
        """PIDs of every process of this site still alive."""
        return [ref.pid for d in self.daemons for ref in d.processes()]

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the executor, then the SuperNode, then anything they started; waits bounded."""
        for daemon in reversed(self.daemons):
            daemon.stop(timeout)

    def exit_reason(self) -> str:
        """Why the SuperNode (or its executor) exited, from the end of its log."""
        node = next((d for d in self.daemons if not d.running), self.daemons[0])
        lines = node.tail(40).splitlines()
        start = next((i for i, line in enumerate(lines) if "Exit Code" in line), None)
        picked = lines[start : start + 4] if start is not None else lines[-6:]
        return " ".join(line.strip() for line in picked if line.strip())


def run_site(
    site: SiteDir,
    kit: SiteKit,
    *,
    superlink: str | None = None,
    isolation: str = "warm",
    max_wait: float | None = 0.2,
    hold: float | None = HOLD_SECONDS,
    on_progress: Callable[[str], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Check the site, run its SuperNode until stopped (Ctrl-C) or it exits; stop everything after.

    Raises
    ------
    TrainingError
        If the SuperNode exits on its own (e.g. its key was refused), with Flower's reason.
    """
    config = check_site(site, kit)
    node = SiteNode(site, kit, superlink=superlink, isolation=isolation, max_wait=max_wait, hold=hold)
    try:
        node.start()
        on_progress(
            f"site {config.site_id}: SuperNode started, connecting out to {superlink or kit.superlink} "
            f"(TLS with {kit.ca_certificate.name}, node key {kit.fingerprint}, {isolation}); "
            f"logs in {node.home / 'logs'}. Ctrl-C stops it."
        )
        while node.running and not should_stop():
            for daemon in node.daemons:
                daemon.refresh()
            time.sleep(1.0)
        if not node.running:
            gone = next(d for d in node.daemons if not d.running)
            raise TrainingError(f"{gone.name} exited (code {gone.exit_code}): {node.exit_reason()}")
    finally:
        node.stop()
