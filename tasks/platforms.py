"""The platform stand-in of a multi-node training job: "nodes" as Linux network namespaces on this machine.

On a cluster the platform starts one torchrun agent per node and starts a node's process again when it dies (a
Kubernetes Indexed Job or PyTorchJob with ``restartPolicy: OnFailure``; ``infra/DISTRIBUTED.md``). Here that part
is played, thinly, by two pieces:

* ``NetnsNodes``: N network namespaces ``mcd-<job>-<i>``, each with ``lo`` up and one veth end ``veth0`` at
  ``10.231.0.<i+1>/24``, made by this code and removed by it however the job ends. Two nodes are joined by one veth
  pair; more by a bridge inside an extra hub namespace. No address or link is added to the machine's own namespace,
  so nothing outside the job's namespaces can ever be reached or bound by it. The namespaces share the filesystem:
  the job's output directory plays the shared volume.
* ``NodeJob``: runs one command per node (in its namespace) and runs a node's command again when it exits with an
  error, up to ``backoff_limit`` times, as the Job controller would. Rendezvous, worker restarts and re-rendezvous
  are torchrun's business, not this module's.

``kill_node`` is what a machine failure looks like: SIGKILL to every process in the node's namespace.
Needs root and iproute2's ``ip``; refuses clearly otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

NAMESPACE_PREFIX = "mcd-"  # every namespace this module makes starts with it
SUBNET = "10.231.0"  # /24, exists only inside the job's namespaces
INTERFACE = "veth0"  # each node's end of the link, inside its own namespace (GLOO_SOCKET_IFNAME)


class PlatformError(RuntimeError):
    """The platform stand-in cannot run here (not root, no ``ip``) or a node failed past its restarts."""


@dataclass(frozen=True)
class Node:
    """One node of the job: where its agent runs and how it is reached.

    Args:
        index: 0 for the node that hosts the rendezvous.
        address: its address on the job's network (the rendezvous endpoint for node 0).
        interface: the network interface gloo binds to.
        namespace: the network namespace its processes run in.
    """

    index: int
    address: str
    interface: str
    namespace: str

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` run inside this node."""
        return ["ip", "netns", "exec", self.namespace, *command]


def namespace_name(job_id: str, index: int | str) -> str:
    """The namespace of node ``index`` of job ``job_id`` (a short digest: names must stay short)."""
    return f"{NAMESPACE_PREFIX}{hashlib.sha1(job_id.encode()).hexdigest()[:8]}-{index}"


def check_can_run() -> None:
    """Raise ``PlatformError`` naming what is missing: root, and iproute2's ``ip``."""
    if shutil.which("ip") is None:
        raise PlatformError("the netns platform needs iproute2's `ip` (apt-get install iproute2)")
    if os.geteuid() != 0:
        raise PlatformError("the netns platform makes network namespaces: it needs root (run as root, or nodes=1)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise PlatformError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def namespaces() -> list[str]:
    """The network namespaces this module made that exist now."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(NAMESPACE_PREFIX)]


def namespace_pids(namespace: str) -> list[int]:
    """Processes running inside ``namespace`` (all started by a job of this module)."""
    done = _ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def kill_node(job_id: str, index: int) -> list[int]:
    """A machine failure: SIGKILL every process of node ``index`` of job ``job_id``; returns the pids killed."""
    pids = namespace_pids(namespace_name(job_id, index))
    _kill(pids)
    logger.warning("node %d of job %s killed (SIGKILL to %d processes)", index, job_id, len(pids))
    return pids


class NetnsNodes:
    """N nodes as network namespaces, made on enter and removed on exit (processes left in them are killed)."""

    def __init__(self, job_id: str, count: int) -> None:
        if count < 2:
            raise ValueError(f"NetnsNodes is for 2 or more nodes (one node trains in process), got {count}")
        if count > 250:
            raise ValueError(f"nodes: at most 250 on one /24, got {count}")
        self.job_id = job_id
        self.nodes = [Node(i, f"{SUBNET}.{i + 1}", INTERFACE, namespace_name(job_id, i)) for i in range(count)]
        self.hub = namespace_name(job_id, "hub") if count > 2 else None

    def __enter__(self) -> NetnsNodes:
        check_can_run()
        for name in [n.namespace for n in self.nodes] + ([self.hub] if self.hub else []):
            self._claim(name)
        try:
            self._build()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _claim(self, name: str) -> None:
        """Create ``name``; one left by a crashed job (no process in it) is removed first."""
        if name in namespaces():
            if namespace_pids(name):
                raise PlatformError(f"namespace {name} exists with processes in it: is job {self.job_id} running?")
            logger.info("removing namespace %s left by an earlier job", name)
            _ip("netns", "del", name)
        _ip("netns", "add", name)

    def _build(self) -> None:
        for node in self.nodes:
            _ip("-n", node.namespace, "link", "set", "lo", "up")
        if len(self.nodes) == 2:  # one veth pair, made with its ends already inside the two namespaces
            a, b = self.nodes
            _ip("link", "add", INTERFACE, "netns", a.namespace, "type", "veth", "peer", "name", INTERFACE,
                "netns", b.namespace)  # fmt: skip
        else:  # a veth per node, the other end on a bridge in the hub namespace
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for node in self.nodes:
                port = f"port{node.index}"
                _ip("link", "add", INTERFACE, "netns", node.namespace, "type", "veth", "peer", "name", port,
                    "netns", self.hub)  # fmt: skip
                _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
        for node in self.nodes:
            _ip("-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", INTERFACE)
            _ip("-n", node.namespace, "link", "set", INTERFACE, "up")

    def remove(self) -> None:
        """Kill what still runs in the namespaces, then delete them (their links go with them)."""
        for name in [n.namespace for n in self.nodes] + ([self.hub] if self.hub else []):
            if name not in namespaces():
                continue
            for _ in range(50):  # SIGKILL is final, but a process may take a moment to leave
                pids = namespace_pids(name)
                if not pids:
                    break
                _kill(pids)
                time.sleep(0.1)
            _ip("netns", "del", name, check=False)
        left = [n for n in namespaces() if n.startswith(namespace_name(self.job_id, ""))]
        if left:
            logger.error("namespaces %s could not be removed: remove them with `ip netns del NAME`", left)


@dataclass
class NodeEvent:
    """A node's command ended: which node, its exit code, when (time.time()), and whether it was started again."""

    node: int
    returncode: int
    at: float
    restarted: bool


@dataclass
class NodeJob:
    """One command per node, each node's started again when it fails (``restartPolicy: OnFailure``).

    Args:
        nodes: the nodes (``NetnsNodes.nodes``).
        command: the command of a node, already for that node (``Node.wrap`` is applied here).
        env: the environment of every command.
        log_dir: each node's output goes to ``node-<i>.log`` there (appended across restarts).
        backoff_limit: restarts allowed over all nodes before the job fails (a Job's ``backoffLimit``).
    """

    nodes: list[Node]
    command: Callable[[Node], list[str]]
    env: dict[str, str]
    log_dir: Path
    backoff_limit: int = 3
    events: list[NodeEvent] = field(default_factory=list, init=False)
    _running: dict[int, subprocess.Popen] = field(default_factory=dict, init=False, repr=False)

    def _start(self, node: Node) -> None:
        log = open(self.log_dir / f"node-{node.index}.log", "ab")  # noqa: SIM115 - closed when the process ends
        process = subprocess.Popen(
            node.wrap(self.command(node)), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()  # the child holds its own copy
        self._running[node.index] = process

    def run(self, timeout_s: float) -> None:
        """Start every node and wait until all ended well; a failed node starts again while restarts are left.

        Raises:
            PlatformError: a node failed with no restart left, or the job ran past ``timeout_s`` (nodes killed).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._start(node)
        deadline = time.monotonic() + timeout_s
        try:
            while self._running:
                if time.monotonic() > deadline:
                    raise PlatformError(f"the job ran past {timeout_s:.0f} s; logs in {self.log_dir}")
                for index, process in list(self._running.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    del self._running[index]
                    restart = code != 0 and self.restarts < self.backoff_limit
                    self.events.append(NodeEvent(index, code, time.time(), restart))
                    if code == 0:
                        continue
                    if not restart:
                        raise PlatformError(
                            f"node {index} failed (exit {code}) with no restart left (backoff_limit "
                            f"{self.backoff_limit}); its log: {self.log_dir / f'node-{index}.log'}"
                        )
                    logger.warning("node %d exited with %d: starting it again (platform restart)", index, code)
                    self._start(self.nodes[index])
                time.sleep(0.2)
        finally:
            for process in self._running.values():  # only on failure: the namespaces' removal kills the rest
                with_pgid_kill(process)
            self._running.clear()

    @property
    def restarts(self) -> int:
        """Node restarts made so far by the platform."""
        return sum(e.restarted for e in self.events)


def with_pgid_kill(process: subprocess.Popen) -> None:
    """SIGKILL a node command's process group (its own session: the agent), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
            os.kill(pid, signal.SIGKILL)


PLATFORMS = {"netns": NetnsNodes}  # platform name -> its nodes; a cluster's platform is its own Job (DISTRIBUTED.md)
