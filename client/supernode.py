"""``fedscan site run``: check the site, then run its Flower SuperNode, connected out to the SuperLink.

Before anything starts, :func:`check_site` refuses a site that is not ready, with the reason: the site's
own node key (``keys/node.key``, born at the site) must be a regular file of this user with mode 0600;
the kit's CA certificate must be the one the kit names; the kit's federation manifest must be signed by a
publisher this site trusts (on the first run, the site adopts its kit's publisher key:
:func:`client.site_enrolment.trust_kit_publisher`) and list this site as enrolled, active, with exactly
this node key, audit key and audit log genesis; ``site.toml`` must load (the site's policy included)
and name the same site as the kit; the site key must pass its own checks and the store must hold data.

Then :class:`SiteNode` starts ``flower-supernode`` through :mod:`client.supernode_process` (the site's
bundle gate: a run's app bundle runs only if it verifies against this site's trusted publishers, pinned
bundles and installed fedscan, :mod:`common.app_bundle`), with the kit's CA certificate (the SuperLink's
TLS certificate is verified against it), the node key (SuperNode authentication), its own Runtime API
port on 127.0.0.1, and a node config naming the site directory; the ClientApp opens the store from there.
The site only connects out: no inbound port is opened (the Runtime API listens on loopback only).

Isolation, as on the server (``docs/performance.md`` has the measurements): ``warm`` (default) runs the
SuperNode with ``--isolation process``, a SuperExec secret and fedscan's pre-warmed executor
(:mod:`common.flower_runtime.warm_exec`); ``process`` uses Flower's ``flower-superexec`` instead;
``subprocess`` is Flower's default. fedscan's performance adaptations (capped idle waits, held answers,
...: :mod:`common.flower_runtime.adaptations`) apply in every mode unless the federation runs in stock
mode (``FEDSCAN_FLOWER_RUNTIME=stock``), which also turns ``warm`` into Flower's ``subprocess``. In
``warm`` isolation the site runs only its installed fedscan, so bundles that carry code are refused.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from client.site import SiteDir
from client.site_audit import load_audit_key
from client.site_config import SiteConfig
from client.site_enrolment import audit_log_genesis, trust_kit_publisher
from client.site_init import load_site_key
from client.store import read_manifest
from common.crypto.pki import certificate_info, node_key_fingerprint, node_public_key, read_private_file
from common.errors import ConfigError, InputError, KeyMaterialError, PolicyError, StoreError
from common.federation_manifest import MANIFEST_FILE, FederationManifest, ManifestSite
from common.federation_manifest import read_manifest as read_federation
from common.flower_runtime.adaptations import effective_isolation, enabled
from common.flower_runtime.daemons import Daemon, flower_environment, free_port
from common.flower_runtime.wakeups import HOLD_SECONDS
from common.fsio import write_atomic, write_private_atomic

__all__ = ["ISOLATIONS", "ReadySite", "SiteKit", "SiteNode", "check_site", "warm_up"]

ISOLATIONS = ("warm", "process", "subprocess")
_KIT_FORMAT = 2


@dataclass(frozen=True)
class SiteKit:
    """A site kit written by ``fedscan server provision`` (``kit.toml``, ``ca.pem``, ``publisher.pub``,
    ``federation.json``); it holds no private key."""

    root: Path
    federation: str
    superlink: str
    site_id: str
    ca_sha256: str
    publisher_key_id: str

    @property
    def ca_certificate(self) -> Path:
        return self.root / "ca.pem"

    @property
    def publisher_pubkey(self) -> Path:
        return self.root / "publisher.pub"

    @property
    def manifest_file(self) -> Path:
        return self.root / MANIFEST_FILE

    @classmethod
    def load(cls, root: Path) -> SiteKit:
        """Read ``root/kit.toml``; InputError naming the file if it is missing, malformed or too old."""
        root = Path(root).resolve()
        path = root / "kit.toml"
        try:
            raw = tomllib.loads(path.read_text())
            if raw["federation"].get("format") != _KIT_FORMAT:
                raise InputError(
                    f"{path} is a kit of format {raw['federation'].get('format')!r}; this fedscan reads "
                    f"{_KIT_FORMAT} (kits built from the sites' enrolment requests): ask the coordinator "
                    "for a new kit."
                )
            return cls(
                root=root,
                federation=str(raw["federation"]["name"]),
                superlink=str(raw["federation"]["superlink"]),
                site_id=str(raw["site"]["id"]),
                ca_sha256=str(raw["federation"]["ca_sha256"]),
                publisher_key_id=str(raw["federation"]["publisher_key_id"]),
            )
        except FileNotFoundError:
            raise InputError(
                f"{root} is not a site kit (no kit.toml); use the folder the coordinator sent."
            ) from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as error:
            raise InputError(f"{path} is malformed ({error!r}).") from None


@dataclass(frozen=True)
class ReadySite:
    """A site that passed :func:`check_site`: its configuration and its verified federation manifest."""

    config: SiteConfig
    manifest: FederationManifest
    node_fingerprint: str
    adopted_publisher: bool


def check_site(site: SiteDir, kit: SiteKit) -> ReadySite:
    """Refuse to start a site that is not ready; return its configuration and federation manifest.

    Raises
    ------
    KeyMaterialError
        The node key or the site key is missing, unsafe (mode, owner, symlink), or not the key the
        federation enrolled for this site; or the manifest names another audit key or log for it.
    PolicyError
        The kit is for another site, or the manifest lists this site as revoked or not yet enrolled.
    InputError
        The CA certificate or the manifest is missing or not the federation's, or the manifest is
        signed by a publisher this site does not trust.
    StoreError
        The site's store holds no data yet (or does not open under the site key).
    """
    try:
        private = read_private_file(site.node_key_file)
    except KeyMaterialError as error:
        if site.node_key_file.exists():
            raise
        raise KeyMaterialError(
            f"{error} This site has no node key: run `fedscan site enrol --site-dir {site.root} --out "
            "REQUEST` and send REQUEST to the coordinator."
        ) from None
    fingerprint = node_key_fingerprint(node_public_key(private))
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
    _publisher, adopted = trust_kit_publisher(site, kit.publisher_pubkey)
    config = SiteConfig.load(site.config_file)  # adoption rewrote the policy
    manifest = read_federation(kit.manifest_file, trusted=config.policy.publisher_keys())
    if manifest.federation != kit.federation or manifest.ca_sha256 != kit.ca_sha256:
        raise InputError(f"{kit.manifest_file} is the manifest of another federation than {kit.root}.")
    _refuse_older_manifest(site, manifest, kit.manifest_file)
    entry = manifest.site(kit.site_id)
    if entry is None or entry.status == "pending":
        raise PolicyError(
            f"Site {kit.site_id} is not enrolled in federation {kit.federation} yet: run `fedscan site enrol "
            f"--site-dir {site.root} --out REQUEST`, send REQUEST to the coordinator, and use the kit they "
            "send back."
        )
    if entry.status == "revoked":
        raise PolicyError(
            f"Site {kit.site_id} is revoked in federation {kit.federation} (manifest serial "
            f"{manifest.serial}); it cannot connect. Ask the coordinator."
        )
    if entry.node_fingerprint != fingerprint:
        raise KeyMaterialError(
            f"{site.node_key_file} (fingerprint {fingerprint}) is not the node key federation "
            f"{kit.federation} enrolled for site {kit.site_id} ({entry.node_fingerprint}); use the kit "
            "made from this site's own enrolment request."
        )
    _check_audit_identity(site, kit, entry)
    key = load_site_key(site)  # the site key's own checks (mode 0600, owner)
    if not site.store_dir.exists() or not any(site.store_dir.iterdir()):
        raise StoreError(f"{site.store_dir} holds no data: run `fedscan site ingest` first.")
    if not read_manifest(site.store_dir, key).records:  # opens under this key, in memory
        raise StoreError(f"{site.store_dir} holds no records: run `fedscan site ingest` first.")
    return ReadySite(config, manifest, fingerprint, adopted)


def _check_audit_identity(site: SiteDir, kit: SiteKit, entry: ManifestSite) -> None:
    """The manifest must name this site's own audit key and log: auditors check the site's log against
    them (``fedscan audit verify --kit``), and the coordinator, who signs the manifest, could otherwise
    enrol a key of its own as this site's and sign a log in the site's name."""
    own = load_audit_key(site).verify_key
    if entry.audit_key != own.to_base64():
        raise KeyMaterialError(
            f"{kit.manifest_file} names another audit key for site {kit.site_id} than this site's own "
            f"({own.key_id}): logs signed in this site's name by that key would verify. Refusing; ask the "
            "coordinator for the manifest made from this site's own enrolment request."
        )
    genesis = audit_log_genesis(site)
    if entry.audit_genesis != genesis:
        raise KeyMaterialError(
            f"{kit.manifest_file} names another audit log for site {kit.site_id} (genesis "
            f"{entry.audit_genesis[:16] or 'none'}...) than this site's own ({genesis[:16]}...). Refusing; "
            "ask the coordinator for the manifest made from this site's own enrolment request."
        )


def _refuse_older_manifest(site: SiteDir, manifest: FederationManifest, path: Path) -> None:
    """Refuse a manifest older (lower serial) than one this site has already seen for its federation.

    An old manifest may still list a site the coordinator has since revoked, or an old key for it;
    the highest serial seen is kept per federation in ``flower/manifest-serials.json``.
    """
    record = site.root / "flower" / "manifest-serials.json"
    try:
        seen: dict[str, int] = {str(k): int(v) for k, v in json.loads(record.read_text()).items()}
    except FileNotFoundError:
        seen = {}
    except (ValueError, AttributeError, TypeError):
        raise InputError(
            f"{record} is damaged; restore or remove it (it only records manifest serials)."
        ) from None
    highest = seen.get(manifest.federation, 0)
    if manifest.serial < highest:
        raise InputError(
            f"{path} is manifest serial {manifest.serial} of federation {manifest.federation}, older than "
            f"serial {highest} this site has already seen: ask the coordinator for the current kit."
        )
    if manifest.serial > highest:
        record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        seen[manifest.federation] = manifest.serial
        write_atomic(record, json.dumps(seen, sort_keys=True).encode(), mode=0o600)


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
    #: Prefix for every process of the site (SuperNode and executor), e.g. ``ip netns exec NS`` to run
    #: the site in its own network namespace (the WAN benchmark), or ``nice -n 5``.
    command_prefix: tuple[str, ...] = ()
    #: The SuperNode and executor are killed if the process that started them dies (the supervisor).
    die_with_parent: bool = False
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise ConfigError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {self.isolation!r}.")
        self.isolation = effective_isolation(self.isolation)  # stock mode, or an ablation, may change it
        if self.isolation == "subprocess" or not enabled("held-answers"):
            self.hold = None
        if not enabled("short-polls"):
            self.max_wait = None

    @property
    def home(self) -> Path:
        """Flower's home for this site (installed app manifests, logs, the SuperExec secret)."""
        return self.site.root / "flower"

    def supernode_argv(self) -> list[str]:
        """The ``flower-supernode`` command, through the site's gate (:mod:`client.supernode_process`)."""
        node_config = self.home / "node-config.toml"
        write_atomic(node_config, f"site-dir = {json.dumps(str(self.site.root.resolve()))}\n".encode())
        if self.runtime_port is None:
            self.runtime_port = free_port()
        args = [
            "--superlink", self.superlink or self.kit.superlink,
            "--root-certificates", str(self.kit.ca_certificate),
            "--auth-supernode-private-key", str(self.site.node_key_file),
            "--trusted-entities", str(self._trusted_entities()),
            "--node-config", str(node_config),
            "--host", "127.0.0.1",
            "--port", str(self.runtime_port),
        ]  # fmt: skip
        if self.max_wait_time is not None:
            args += ["--max-wait-time", str(self.max_wait_time)]
        if self.isolation != "subprocess":
            args += ["--isolation", "process", "--superexec-auth-secret-file", str(self._secret())]
        launcher = [
            sys.executable, "-m", "client.supernode_process",
            "--site-dir", str(self.site.root.resolve()),
            "--kit", str(self.kit.root),
            "--isolation", self.isolation,
        ]  # fmt: skip
        if self.isolation == "subprocess":
            launcher += ["--stock"]  # Flower's own SuperNode, as it comes (the gate stays)
        else:
            launcher += ["--max-wait", str(self.max_wait or 0), "--hold", str(self.hold or 0)]
        return [*launcher, "flower-supernode", *args]

    def _trusted_entities(self) -> Path:
        """Flower's ``--trusted-entities`` file: the site's trusted publisher keys (OpenSSH), by key id.

        With it, even a Flower without fedscan's gate refuses every bundle it cannot verify.
        """
        keys = SiteConfig.load(self.site.config_file).policy.publisher_keys()
        if not keys:
            raise ConfigError(f"{self.site.config_file} trusts no publisher: the site would run nothing.")
        path = self.home / "trusted-entities.yaml"
        lines = [f"{json.dumps(k.key_id)}: {json.dumps(k.to_openssh())}" for k in keys]
        write_atomic(path, ("\n".join(lines) + "\n").encode(), mode=0o600)
        return path

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
        command = argv if argv is not None else [*self.command_prefix, *self.supernode_argv()]
        node = Daemon(
            f"SuperNode {self.kit.site_id}", command, self.home / "logs" / "supernode.log", env,
            die_with_parent=self.die_with_parent,
        )  # fmt: skip
        self.daemons.append(node.start())
        if self.isolation != "subprocess":
            executor = self._executor(node.pid)
            executor.argv = [*self.command_prefix, *executor.argv]
            executor.die_with_parent = self.die_with_parent
            self.daemons.append(executor.start())
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
            sys.executable, "-m", "common.flower_runtime.warm_exec",
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
