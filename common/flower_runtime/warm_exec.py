"""A SuperExec that starts every Flower task from a pre-warmed interpreter (``--isolation process``).

Flower 1.42 runs each message a SuperNode receives as a *task*: a SuperExec polls the SuperNode's
Runtime API for a pending task and starts a fresh ``flwr-clientapp --token ...`` process, which
imports Flower, torch and the ClientApp, handles that one message and exits. With the default
``--isolation subprocess`` that interpreter start-up (about 3 s here, more when three sites start at
once on two cores) is paid for every message: 2 per plain round and 5 per SecAgg+ round.

``flwr-clientapp`` processes cannot be kept alive across messages in Flower 1.42 (each holds a
one-task token), so this executor keeps the *interpreter* warm instead: it imports Flower and the
modules named with ``--preload`` once, then ``fork()``s a child per task that runs Flower's own
``run_clientapp`` (or ``run_serverapp``) with the task's token. Each message still runs in its own
process that exits afterwards, exactly as with the stock SuperExec; only the start-up is gone. The
child for the next task is forked ahead, while nothing waits for it (a *spare*: it waits for its
token on a pipe and exits without running anything if the executor stops or dies first), so a task
does not wait for ``fork()`` either.

Safety of ``fork()`` here: the parent never starts a thread and never runs a torch operation (torch's
OpenMP pool must not exist before a fork), it only imports (and then freezes what it imported out of the
garbage collector's reach, :mod:`common.flower_runtime.startup_heap`); it holds no data and no keys. Its HTTP
client is used by the parent alone. With ``--auth-secret-file`` the executor signs ``AcquireTask``
with Flower's SuperExec authentication, so no other local process can take a task (Flower honours the
secret only in process isolation).

Run: ``python -m common.flower_runtime.warm_exec --runtime-api-address 127.0.0.1:PORT
--task-type flwr-clientapp --insecure --warm-up client.supernode:warm_up --parent-pid PID``. Stops on
SIGTERM/SIGINT or when the parent process is gone, terminating its running tasks by PID, each wait
bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from common.flower_runtime.startup_heap import freeze_startup_heap

__all__ = ["TASK_TYPES", "WarmExecutor", "import_task_preparation", "main"]

#: Task types this executor can run, as Flower names them.
TASK_TYPES = ("flwr-clientapp", "flwr-serverapp")
_ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"
_CHILD_STOP_SECONDS = 10.0


class WarmExecutor:
    """Polls one Runtime API for tasks of one type and forks a warm child per task.

    Parameters
    ----------
    runtime_api_address
        ``host:port`` of the SuperNode's (or SuperLink's) Runtime API.
    task_type
        ``flwr-clientapp`` or ``flwr-serverapp``.
    root_certificates
        CA bundle for a TLS Runtime API; ``None`` with ``insecure`` for a loopback plain-HTTP one.
    auth_secret
        Flower SuperExec authentication secret (the bytes of the file given to the SuperNode/SuperLink).
    poll_interval
        Seconds between ``AcquireTask`` calls within ``busy_window`` seconds of the last task, when
        the next one is likely close (the next stage or round); ``idle_poll`` seconds otherwise.
    max_wait
        Cap on the idle waits inside each task (:mod:`common.flower_runtime.polling`); ``None`` keeps
        Flower's.
    """

    def __init__(
        self,
        runtime_api_address: str,
        task_type: str,
        *,
        root_certificates: Path | None = None,
        insecure: bool = False,
        auth_secret: bytes | None = None,
        poll_interval: float = 0.1,
        idle_poll: float = 1.0,
        busy_window: float = 60.0,
        max_wait: float | None = None,
        parent_pid: int | None = None,
    ) -> None:
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {', '.join(TASK_TYPES)}, not {task_type!r}.")
        if insecure == (root_certificates is not None):
            raise ValueError("Give exactly one of root_certificates (TLS) or insecure (loopback HTTP).")
        if not 0.01 <= poll_interval <= 60:
            raise ValueError(f"poll_interval must be within [0.01, 60] seconds, got {poll_interval}.")
        self.runtime_api_address = runtime_api_address
        self.task_type = task_type
        self.root_certificates = root_certificates
        self.insecure = insecure
        self.auth_secret = auth_secret
        self.poll_interval = poll_interval
        self.idle_poll = max(idle_poll, poll_interval)
        self.busy_window = busy_window
        self._last_task = -float("inf")
        self.max_wait = max_wait
        self.parent_pid = parent_pid
        self.children: dict[int, float] = {}  # pid -> start (monotonic)
        self._spare: tuple[int, int] | None = None  # (pid, write end of its token pipe)
        self._stopping = False

    def serve(self) -> int:
        """Run until stopped (signal, or the parent process gone); return the process exit code."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        client = self._client()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._request_stop)
        wanted = [TaskType(self.task_type)]
        try:
            while not self._stopping and self._parent_alive():
                self._reap()
                self._keep_spare()
                try:
                    res = client.AcquireTask(AcquireTaskRequest(supported_task_types=wanted))
                except Exception as error:  # noqa: BLE001 - the Runtime API may be restarting
                    _say(f"AcquireTask failed: {error}")
                    time.sleep(min(1.0, 10 * self.poll_interval))
                    continue
                if res.HasField("task") and res.token:
                    self._start_task(res.token)
                    self._last_task = time.monotonic()
                    continue  # another task may be waiting
                busy = time.monotonic() - self._last_task < self.busy_window
                time.sleep(self.poll_interval if busy else self.idle_poll)
        finally:
            self._stop_children()
            client.close()
        return 0

    def _client(self):  # type: ignore[no-untyped-def]
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if self.auth_secret:
            interceptors.append(
                SuperExecAuthHttpInterceptor(
                    master_secret=self.auth_secret, protected_methods=frozenset({_ACQUIRE_METHOD})
                )
            )
        return RuntimeHttpClient.from_server_address(
            server_address=self.runtime_api_address,
            insecure=self.insecure,
            root_certificates=self._certificates(),
            interceptors=interceptors,
        )

    def _certificates(self) -> bytes | None:
        return None if self.root_certificates is None else Path(self.root_certificates).read_bytes()

    def _request_stop(self, _signum: int, _frame: object) -> None:
        self._stopping = True

    def _parent_alive(self) -> bool:
        if self.parent_pid is None:
            return True
        try:
            os.kill(self.parent_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _reap(self) -> None:
        for pid, started in list(self.children.items()):
            status, usage = 0, ""
            with contextlib.suppress(ChildProcessError):
                done, status, rusage = os.wait4(pid, os.WNOHANG)
                if done == 0:
                    continue
                usage = f" (CPU {rusage.ru_utime + rusage.ru_stime:.2f} s, {rusage.ru_minflt} page faults)"
            del self.children[pid]
            _say(
                f"task process {pid} exited with code {os.waitstatus_to_exitcode(status)} "
                f"after {time.monotonic() - started:.2f} s{usage}"
            )

    def _keep_spare(self) -> None:
        """Have the next task's process forked and prepared before its task arrives.

        ``fork()`` of this warm interpreter and the child's own set-up took 30 ms on an idle core and
        about 0.1 s on a busy one, on every message's critical path; a spare child pays it while
        nothing waits. The spare waits for its task's token on a pipe and exits, having run nothing,
        when the pipe closes without one (this executor stopping or gone).
        """
        if self._spare is not None:
            pid, _ = self._spare
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    return  # still waiting for a task
            _say(f"spare task process {pid} ended before its task; forking another")
            os.close(self._spare[1])
            self._spare = None
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            os.close(read_end)
            self._spare = (pid, write_end)
            return
        os.close(write_end)
        code = 1
        try:
            self._prepare_task()
            token = _read_all(read_end)
            code = self._run_task(token) if token else 0
        except SystemExit as done:  # Flower ends every task with sys.exit
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:  # noqa: BLE001 - a child must never return into the parent's loop
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _start_task(self, token: str) -> None:
        """Hand ``token`` to the spare process (forked now if there is none), which runs the task."""
        self._keep_spare()
        assert self._spare is not None
        pid, write_end = self._spare
        self._spare = None
        try:
            os.write(write_end, token.encode())  # a token is far below the pipe's atomic size
        finally:
            os.close(write_end)
        self.children[pid] = time.monotonic()
        _say(f"task process {pid} started")

    def _prepare_task(self) -> None:
        """In a spare child, before its task: default signals, and the task role's adaptations (unsent
        telemetry skipped, fedscan's waits and transfers: :mod:`common.flower_runtime.adaptations`)."""
        from common.flower_runtime.adaptations import apply
        from common.flower_runtime.polling import shorten_polls
        from common.flower_runtime.telemetry import skip_unsent_telemetry
        from common.flower_runtime.transfers import widen_object_transfers

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        client = self.task_type == "flwr-clientapp"
        max_wait = self.max_wait

        def short_polls() -> list[str]:
            return shorten_polls("clientapp" if client else "serverapp", max_wait) if max_wait else []

        apply(
            "clientapp-task" if client else "serverapp-task",
            {
                "short-polls": short_polls,
                "wide-transfers": widen_object_transfers if max_wait else lambda: [],
                "unsent-telemetry": skip_unsent_telemetry,
            },
            say=False,  # once per message would flood the log; the executor says it once at start
        )

    def _run_task(self, token: str) -> int:
        """In the spare child, once it has its token: run one task with Flower's own task runner."""
        parent = os.getppid()
        if self.task_type == "flwr-clientapp":
            from flwr.supernode.runtime.run_clientapp import run_clientapp

            run_clientapp(
                runtime_api_address=self.runtime_api_address,
                token=token,
                insecure=self.insecure,
                certificates=self._certificates(),
                parent_pid=parent,
                runtime_dependency_install=False,
            )
            return 0
        from queue import Queue

        from flwr.supercore.logger import mirror_output_to_queue, restore_output
        from flwr.superlink.runtime import run_serverapp

        log_queue: Queue[str | None] = Queue()
        mirror_output_to_queue(log_queue)  # so that `flwr log` streams the ServerApp's output
        try:
            run_serverapp(
                runtime_api_address=self.runtime_api_address,
                log_queue=log_queue,
                token=token,
                insecure=self.insecure,
                certificates=self._certificates(),
                parent_pid=parent,
                runtime_dependency_install=False,
            )
        finally:
            restore_output()
        return 0

    def _stop_children(self) -> None:
        """Release the spare, SIGTERM every running task, wait (bounded), SIGKILL what is left; by PID."""
        if self._spare is not None:
            pid, write_end = self._spare
            os.close(write_end)  # the spare reads no token and exits
            self.children[pid] = time.monotonic()
            self._spare = None
        self._reap()
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _CHILD_STOP_SECONDS
        while self.children and time.monotonic() < deadline:
            time.sleep(0.05)
            self._reap()
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children and time.monotonic() < deadline + 5:
            time.sleep(0.05)
            self._reap()


def import_task_preparation(task_type: str) -> None:
    """Import, before forking, Flower's runner for ``task_type`` and what each task applies before its
    token arrives (``WarmExecutor._prepare_task``), so that no task imports them.

    fedscan's part, imported in every forked task instead, cost ~14 ms of CPU per message.
    """
    if task_type == "flwr-clientapp":
        import flwr.supernode.runtime.run_clientapp  # noqa: F401
    else:
        import flwr.superlink.runtime  # noqa: F401
    import common.flower_runtime.adaptations
    import common.flower_runtime.polling
    import common.flower_runtime.telemetry
    import common.flower_runtime.transfers  # noqa: F401


def _read_all(fd: int) -> str:
    """Everything written to the pipe ``fd`` until its write end closes (empty if nothing was)."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def _say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"{stamp} fedscan warm executor: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--task-type", required=True, choices=TASK_TYPES)
    tls = parser.add_mutually_exclusive_group(required=True)
    tls.add_argument("--root-certificates", type=Path)
    tls.add_argument("--insecure", action="store_true")
    parser.add_argument("--auth-secret-file", type=Path)
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--poll-interval", type=float, default=0.1, help="Seconds between polls while busy.")
    parser.add_argument("--idle-poll", type=float, default=1.0, help="Seconds between polls while idle.")
    parser.add_argument("--max-wait", type=float, help="Cap on idle waits inside each task, in seconds.")
    parser.add_argument("--preload", action="append", default=[], help="Module to import before forking.")
    parser.add_argument(
        "--warm-up", action="append", default=[], help="MODULE:FUNCTION to call before forking."
    )
    args = parser.parse_args(argv)
    import_task_preparation(args.task_type)
    for module in args.preload:
        importlib.import_module(module)
    for target in args.warm_up:
        module_name, _, function = target.partition(":")
        getattr(importlib.import_module(module_name), function)()
    from common.flower_runtime.adaptations import apply

    def frozen() -> list[str]:  # before the first fork: tasks' collections walk only their own objects
        return [f"start-up heap frozen ({freeze_startup_heap()} objects)"]

    apply("executor", {"startup-heap": frozen})
    task_role = "clientapp-task" if args.task_type == "flwr-clientapp" else "serverapp-task"
    apply(task_role, {name: lambda: [] for name in ("short-polls", "wide-transfers", "unsent-telemetry")})
    executor = WarmExecutor(
        args.runtime_api_address,
        args.task_type,
        root_certificates=args.root_certificates,
        insecure=args.insecure,
        auth_secret=args.auth_secret_file.read_bytes() if args.auth_secret_file else None,
        poll_interval=args.poll_interval,
        idle_poll=args.idle_poll,
        max_wait=args.max_wait,
        parent_pid=args.parent_pid,
    )
    _say(
        f"ready for {args.task_type} tasks on {args.runtime_api_address} "
        f"(preloaded: {', '.join([*args.preload, *args.warm_up]) or 'Flower only'})"
    )
    sys.exit(executor.serve())


if __name__ == "__main__":
    main()
