"""The federation's SuperLink: started from the server kit, with TLS and SuperNode authentication.

:class:`SuperLink` starts ``flower-superlink`` with the kit's certificate, ``--enable-supernode-auth``,
its state in memory (or a database file) and runtime dependency installation disabled, and
drives it with Flower's own CLI (``flwr``) through a private ``FLWR_HOME`` whose one connection points
at it over TLS. It keeps the kit's node keys and the SuperLink's registrations in step
(:meth:`SuperLink.sync_registrations`): active sites' keys registered, revoked ones unregistered.

State lives in ``server/state/`` (0700): ``registry.json`` (which node id Flower gave which key:
Flower lists node ids, never keys, so this is the only way to unregister a key later), the CLI's home,
the SuperExec secret, logs, ``superlink.json`` while a SuperLink runs, and the database if one is asked
for (by default Flower keeps its state in memory; see :class:`SuperLink`).

Every SuperLink runs through fedscan's launcher (:mod:`common.flower_runtime.launcher`), which puts the
control-plane gate in front of Flower's app: peers off the coordinator's loopback reach only the Fleet API
(:mod:`common.flower_runtime.control_gate`), and applies fedscan's performance adaptations
(:mod:`common.flower_runtime.adaptations`) unless the federation runs in stock mode.

Isolation (how the ServerApp process is started; ``docs/performance.md`` has the measurements):

* ``warm`` (default): ``--isolation process`` and fedscan's pre-warmed executor
  (:mod:`common.flower_runtime.warm_exec`); in stock mode (``FEDSCAN_FLOWER_RUNTIME=stock``) it becomes
  Flower's ``subprocess``;
* ``process``: ``--isolation process`` and Flower's own ``flower-superexec``;
* ``subprocess``: Flower's default, the SuperLink starts its own SuperExec.

In both process modes a SuperExec secret (0600) is required for ``AcquireTask``, so nothing else that
can reach the SuperLink's port can take the ServerApp's task (Flower ignores the secret with
``subprocess`` isolation).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError, FedscanError, TrainingError
from common.flower_runtime.adaptations import effective_isolation, enabled
from common.flower_runtime.daemons import Daemon, flower_environment, wait_for_port
from common.flower_runtime.wakeups import HOLD_SECONDS
from common.fsio import write_atomic, write_private_atomic
from server.coordinator_audit import record_registrations
from server.provision import Federation

__all__ = ["ISOLATIONS", "RegistrationReport", "SuperLink", "running_superlink", "sync_running"]

ISOLATIONS = ("warm", "process", "subprocess")
_CONNECTION = "fedscan"
_FLWR_TIMEOUT = 120.0
_IN_MEMORY = ":flwr-in-memory:"  # Flower's name for its in-memory state


@dataclass(frozen=True)
class RegistrationReport:
    """What :meth:`SuperLink.sync_registrations` changed; node ids by site.

    ``removed`` lists registrations no active site of the kit accounts for (made outside fedscan, e.g.
    through Flower's Control API, or left in a database from earlier): node ids, unregistered.
    """

    registered: dict[str, int] = field(default_factory=dict)
    unregistered: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.registered or self.unregistered or self.removed)


def _state_dir(fed: Federation) -> Path:
    path = fed.server_dir / "state"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class SuperLink:
    """One ``flower-superlink`` for a federation, and the ``flwr`` CLI pointed at it.

    Parameters
    ----------
    fed
        The federation (its server kit has the certificates and node keys).
    listen_host
        Interface to listen on: ``0.0.0.0`` for sites on other machines; ``127.0.0.1`` for tests.
    port
        Port to listen on; default the kit's SuperLink address's port.
    isolation
        ``warm``, ``process`` or ``subprocess`` (see the module docstring).
    max_wait
        Cap, in seconds, on the ServerApp's idle waits between pulls for replies (``warm`` only);
        ``None`` keeps Flower's 3 s.
    hold
        Seconds the SuperLink holds an empty answer to a poll (messages for a site, the sites'
        replies, a message part not uploaded yet) and answers as soon as there is news
        (:mod:`common.flower_runtime.wakeups`); ``None`` answers at once, as stock Flower. Off with
        ``subprocess`` isolation, which stays Flower's default throughout.
    database
        SQLite file for the SuperLink's state (runs, registrations, message objects), or ``None`` for
        Flower's in-memory state. In memory is the default: every model array crosses the SuperLink as
        one object, and through SQLite a round took 2.4x as long here (``docs/performance.md``);
        registrations are re-applied from the kit at every start, so nothing the federation needs is
        lost when the SuperLink stops.
    """

    def __init__(
        self,
        fed: Federation,
        *,
        listen_host: str = "0.0.0.0",
        port: int | None = None,
        isolation: str = "warm",
        max_wait: float | None = 0.1,
        hold: float | None = HOLD_SECONDS,
        database: Path | None = None,
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ConfigError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}.")
        self.fed = fed
        self.listen_host = listen_host
        self.port = port or fed.port
        self.isolation = effective_isolation(isolation)  # stock mode, or an ablation, may change it
        self.max_wait = max_wait
        self.hold = hold if self.isolation != "subprocess" and enabled("held-answers") else None
        self.database = Path(database).resolve() if database is not None else None
        self.state = _state_dir(fed)
        self.flwr_home = self.state / "flwr-home"
        self.daemons: list[Daemon] = []

    # ---- life cycle ------------------------------------------------------------------------------

    @property
    def registry_file(self) -> Path:
        return self.state / "registry.json"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def env(self) -> dict[str, str]:
        return flower_environment(self.flwr_home)

    def start(self, timeout: float = 60.0) -> SuperLink:
        """Start the SuperLink (and its executor) and wait until it accepts connections."""
        if running_superlink(self.fed) is not None:
            raise ConfigError(
                f"A SuperLink for federation {self.fed.name} already runs "
                f"(see {self.state / 'superlink.json'}); stop it first."
            )
        self.flwr_home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_cli_config()
        if (self.database is None or not self.database.exists()) and self.registry_file.exists():
            self.registry_file.unlink()  # registrations live in the database: a new one knows none
        # Flower's own command runs in fedscan's launcher (same process, same arguments): always with the
        # control-plane gate (only Fleet routes for peers off loopback, common.flower_runtime.control_gate);
        # outside Flower's default isolation also with fedscan's pace (held poll answers, lean middleware).
        command = [sys.executable, "-m", "common.flower_runtime.launcher"]
        if self.isolation == "subprocess":
            command += ["--stock"]
        else:
            command += ["--hold", str(self.hold or 0)]
        command += ["flower-superlink"]
        argv = [
            *command,
            "--ssl-ca-certfile", str(self.fed.ca_certificate),
            "--ssl-certfile", str(self.fed.server_certificate),
            "--ssl-keyfile", str(self.fed.server_key),
            "--enable-supernode-auth",
            "--database", str(self.database) if self.database is not None else _IN_MEMORY,
            "--disable-runtime-dependency-installation",
            "--host", self.listen_host,
            "--port", str(self.port),
        ]  # fmt: skip
        secret = self.state / "superexec.secret"
        if self.isolation != "subprocess":
            write_private_atomic(secret, secrets.token_bytes(32))
            argv += ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
        link = Daemon("SuperLink", argv, self.logs / "superlink.log", self.env()).start()
        self.daemons.append(link)
        try:
            wait_for_port("127.0.0.1", self.port, timeout=timeout, daemon=link)
            if self.isolation != "subprocess":
                self.daemons.append(self._executor(link.pid, secret).start())
            write_atomic(
                self.state / "superlink.json",
                json.dumps({"pid": link.pid, "port": self.port, "isolation": self.isolation}).encode(),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _executor(self, link_pid: int, secret: Path) -> Daemon:
        runtime = f"127.0.0.1:{self.port}"
        if self.isolation == "process":
            argv = [
                str(Path(sys.executable).parent / "flower-superexec"),
                "--runtime-api-address", runtime,
                "--root-certificates", str(self.fed.ca_certificate),
                "--superexec-auth-secret-file", str(secret),
                "--parent-pid", str(link_pid),
            ]  # fmt: skip
            env = flower_environment(self.flwr_home, {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1"})
            return Daemon("SuperExec", argv, self.logs / "executor.log", env)
        argv = [
            sys.executable, "-m", "common.flower_runtime.warm_exec",
            "--runtime-api-address", runtime,
            "--task-type", "flwr-serverapp",
            "--root-certificates", str(self.fed.ca_certificate),
            "--auth-secret-file", str(secret),
            "--parent-pid", str(link_pid),
            "--preload", "server.server_app",
            # One ServerApp task per run: polling the public port fast would only cost the SuperLink
            # (a holding SuperLink answers when a run starts, so the executor may ask again at once).
            "--poll-interval", "0.01" if self.hold else "1.0",
        ]  # fmt: skip
        if self.max_wait is not None:
            # The ServerApp's pulls for replies are held by the SuperLink: no need to sleep between.
            argv += ["--max-wait", str(min(self.max_wait, 0.01) if self.hold else self.max_wait)]
        return Daemon("ServerApp executor", argv, self.logs / "executor.log", self.env())

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the executor, then the SuperLink, then anything they started; every wait bounded."""
        for daemon in reversed(self.daemons):
            daemon.stop(timeout)
        with contextlib.suppress(FileNotFoundError):
            (self.state / "superlink.json").unlink()

    def processes(self) -> list[int]:
        """PIDs of every process of this SuperLink still alive (for checks and tests)."""
        return [ref.pid for d in self.daemons for ref in d.processes()]

    def check_alive(self) -> None:
        """Raise a clear error if the SuperLink or its executor has exited."""
        for daemon in self.daemons:
            daemon.refresh()
            if not daemon.running:
                raise TrainingError(
                    f"The {daemon.name} exited (code {daemon.exit_code}); end of {daemon.log_file}:\n"
                    f"{daemon.tail()}"
                )

    def __enter__(self) -> SuperLink:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- the flwr CLI ----------------------------------------------------------------------------

    def _write_cli_config(self) -> None:
        text = "\n".join(
            [
                "[superlink]",
                f'default = "{_CONNECTION}"',
                "",
                f"[superlink.{_CONNECTION}]",
                f'address = "127.0.0.1:{self.port}"',
                f"root-certificates = {json.dumps(str(self.fed.ca_certificate))}",
                "",
            ]
        )
        write_atomic(self.flwr_home / "config.toml", text.encode(), mode=0o600)

    def flwr(self, *args: str, timeout: float = _FLWR_TIMEOUT, check: bool = True) -> dict[str, Any]:
        """Run ``flwr ARGS --format json`` against this SuperLink; the parsed JSON answer.

        Raises
        ------
        TrainingError
            If the command fails, times out, or (with ``check``) answers ``success: false``.
        """
        argv = [str(Path(sys.executable).parent / "flwr"), *args, "--format", "json"]
        try:
            done = subprocess.run(
                argv, env=self.env(), capture_output=True, text=True, timeout=timeout, cwd=self.state
            )
        except subprocess.TimeoutExpired:
            raise TrainingError(f"`flwr {' '.join(args)}` did not answer within {timeout:.0f} s.") from None
        try:
            body: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
        except ValueError:
            raise TrainingError(
                f"`flwr {' '.join(args)}` failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            ) from None
        if check and not body.get("success", False):
            raise TrainingError(f"`flwr {' '.join(args)}` failed: {body.get('error-message', body)}")
        return body

    # ---- registrations ---------------------------------------------------------------------------

    def _registry(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads(self.registry_file.read_text()))
        except FileNotFoundError:
            return {}

    def _save_registry(self, registry: dict[str, dict[str, Any]]) -> None:
        write_atomic(self.registry_file, json.dumps(registry, indent=2, sort_keys=True).encode(), mode=0o600)

    def registered_nodes(self) -> list[int]:
        """Node ids the SuperLink holds a registration for (any status but unregistered)."""
        nodes = self.flwr("supernode", "list", _CONNECTION).get("nodes", [])
        return sorted(int(n["node-id"]) for n in nodes if n.get("status") != "unregistered")

    def sync_registrations(self) -> RegistrationReport:
        """Make the SuperLink's registrations exactly the kit's active sites' node keys.

        Revoked sites' keys are unregistered, every registration no active site accounts for is
        removed, and active sites' keys not registered yet are registered. The registry is saved after
        every change, so an interruption never loses a node id; what changed is recorded in the
        coordinator's audit log (:mod:`server.coordinator_audit`).
        """
        registry = self._registry()  # fingerprint -> {"site": id, "node_id": int}
        report = RegistrationReport()
        active = {s.fingerprint: s.site_id for s in self.fed.active_sites()}
        for fingerprint, entry in list(registry.items()):
            if fingerprint not in active:
                self.flwr("supernode", "unregister", str(entry["node_id"]), _CONNECTION)
                report.unregistered[str(entry["site"])] = int(entry["node_id"])
                del registry[fingerprint]
                self._save_registry(registry)
        known = {int(entry["node_id"]) for entry in registry.values()}
        for node_id in self.registered_nodes():
            if node_id not in known:
                self.flwr("supernode", "unregister", str(node_id), _CONNECTION)
                report.removed.append(node_id)
        for fingerprint, site_id in sorted(active.items(), key=lambda item: item[1]):
            if fingerprint in registry:
                report.kept[site_id] = int(registry[fingerprint]["node_id"])
                continue
            key = self.fed.node_public_key(site_id)
            body = self.flwr("supernode", "register", str(key), _CONNECTION, "--name", site_id, check=False)
            if not body.get("success"):
                raise TrainingError(
                    f"Could not register site {site_id}'s node key ({key}): {body.get('error-message')}. "
                    f"If the key is already registered but {self.registry_file} lost it, stop the SuperLink "
                    f"and move its database ({self.database}) away to start afresh."
                )
            registry[fingerprint] = {"site": site_id, "node_id": int(body["node-id"])}
            self._save_registry(registry)
            report.registered[site_id] = int(body["node-id"])
        record_registrations(self.fed, report)
        return report

    def site_of_node(self) -> dict[int, str]:
        return {int(e["node_id"]): str(e["site"]) for e in self._registry().values()}

    def online_sites(self) -> list[str]:
        """Active sites whose SuperNode is connected now."""
        names = self.site_of_node()
        nodes = self.flwr("supernode", "list", _CONNECTION).get("nodes", [])
        return sorted(
            names[int(n["node-id"])]
            for n in nodes
            if n.get("status") == "online" and int(n["node-id"]) in names
        )

    def wait_for_sites(
        self,
        count: int,
        *,
        timeout: float,
        on_wait: Callable[[list[str]], None] = lambda _: None,
        interval: float = 2.0,
    ) -> list[str]:
        """Wait until ``count`` sites are online; TrainingError naming the missing ones after ``timeout``."""
        deadline = time.monotonic() + timeout
        expected = sorted(s.site_id for s in self.fed.active_sites())
        while True:
            self.check_alive()
            online = self.online_sites()
            if len(online) >= count:
                return online
            on_wait(online)
            if time.monotonic() > deadline:
                missing = [s for s in expected if s not in online]
                raise TrainingError(
                    f"Only {len(online)} of the {count} sites needed connected within {timeout:.0f} s "
                    f"(online: {', '.join(online) or 'none'}; not connected: {', '.join(missing)}). "
                    "Check that those sites run `fedscan site run` and can reach "
                    f"{self.fed.superlink}."
                )
            time.sleep(interval)


def running_superlink(fed: Federation) -> dict[str, Any] | None:
    """The record of this kit's running SuperLink (pid, port), if one runs now."""
    path = fed.server_dir / "state" / "superlink.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(int(record["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass
    return record


def sync_running(fed: Federation) -> RegistrationReport | None:
    """Apply the kit's registrations to its running SuperLink now, if one runs (else ``None``)."""
    record = running_superlink(fed)
    if record is None:
        return None
    link = SuperLink(fed, port=int(record["port"]), isolation=str(record.get("isolation", "warm")))
    try:
        return link.sync_registrations()
    except FedscanError:
        raise
    except OSError as error:
        raise TrainingError(f"Could not reach the running SuperLink: {error}.") from None
