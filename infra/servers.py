"""Servers for the pipeline on loopback: Prefect server + process workers, and MLflow server, in two modes.

* ``local`` (the default): SQLite underneath both servers, one worker;
* ``cluster`` (``MODELCORE_INFRA_MODE=cluster`` or ``--mode cluster``): PostgreSQL (Debian's server, its own
  data directory under the home, see ``infra/postgres.py``) underneath both servers, MLflow artifacts through
  the server's proxied artifact store, and a work pool served by ``MODELCORE_WORKERS`` workers with a pool
  concurrency limit (``MODELCORE_POOL_LIMIT``) that Prefect enforces.

    python -m infra.servers start          # idempotent: a service that answers its health check is left alone
    python -m infra.servers status         # health of each service; exit status 1 when one is down
    python -m infra.servers stop           # workers first, then the servers, then PostgreSQL: SIGINT, then SIGKILL
    eval "$(python -m infra.servers env)"  # PREFECT_API_URL, MLFLOW_TRACKING_URI, ... for this shell
    python -m infra.servers deploy         # prefect deploy of deployments/prefect.yaml, bounded by the pool's limit
    python -m infra.servers --mode cluster start   # every verb takes --mode (else MODELCORE_INFRA_MODE)

Everything lives under the pipeline home (``MODELCORE_PIPELINE_HOME``, default ``./.pipeline``):

* ``infra/<service>.pid`` and ``infra/<service>.log``: process ids (with start times, so a reused pid is
  never signalled) and logs of the processes started here (``infra-cluster/`` in cluster mode);
* ``prefect-server/``: ``PREFECT_HOME`` of the server and the worker (the server's SQLite is ``prefect.db``);
* ``mlflow-server.db`` and ``mlartifacts-server/``: MLflow's SQLite store and the artifacts it serves;
* cluster mode: ``postgres/`` (data directory, socket, password), ``prefect-cluster/`` (``PREFECT_HOME``) and
  ``mlartifacts-cluster/`` (the artifacts MLflow serves).

Settings (environment; hosts are loopback unless set otherwise):

* ``MODELCORE_PREFECT_HOST`` / ``MODELCORE_PREFECT_PORT``: 127.0.0.1 / 4200
* ``MODELCORE_MLFLOW_HOST`` / ``MODELCORE_MLFLOW_PORT``: 127.0.0.1 / 5000
* ``MODELCORE_WORK_POOL``: ``modelcore-process`` (the pool ``deployments/prefect.yaml`` targets; created
  by the worker, type ``process``, when missing); ``MODELCORE_WORKER_NAME``: ``modelcore-worker``;
  ``MODELCORE_WORKER_LIMIT``: 1 concurrent flow run per worker; ``PREFECT_WORKER_QUERY_SECONDS``: 10.
* cluster mode: ``MODELCORE_PG_HOST`` / ``MODELCORE_PG_PORT``: 127.0.0.1 / 5433; ``MODELCORE_WORKERS``: 3
  workers (``<worker name>-1`` ...); ``MODELCORE_POOL_LIMIT``: 2 concurrent flow runs in the pool.

On a loaded 2-core machine MLflow needs ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` and one worker to
start in seconds rather than minutes; the worker stops before the Prefect server it polls (infra/README.md
has the measured times).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from infra import postgres

REPO = Path(__file__).resolve().parents[1]  # the deployments' pull step runs flow code from here (MODELCORE_REPO)
SERVICES = ("mlflow", "prefect-server", "prefect-worker")  # local mode; cluster mode: see services()
MODES = ("local", "cluster")
_CHILDREN: dict[int, subprocess.Popen] = {}


class ServerError(RuntimeError):
    """A service did not start (its log's last lines are in the message) or its port is taken."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the services listen and keep their state; :meth:`from_env` reads the environment."""

    home: Path
    prefect_host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_host: str = "127.0.0.1"
    mlflow_port: int = 5000
    work_pool: str = "modelcore-process"
    worker_name: str = "modelcore-worker"
    worker_limit: int = 1
    worker_query_seconds: float = 10.0
    mode: str = "local"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5433  # beside a system PostgreSQL's 5432
    workers: int = 3  # cluster mode
    pool_limit: int = 2  # cluster mode: flow runs at once in the pool, whatever the workers could take
    start_timeout_s: float = 240.0  # servers take 10-20 s alone, much longer on a busy machine
    stop_timeout_s: float = 20.0  # grace after SIGINT before SIGKILL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        return cls(
            home=Path(env.get("MODELCORE_PIPELINE_HOME", ".pipeline")).expanduser().resolve(),
            prefect_host=env.get("MODELCORE_PREFECT_HOST", cls.prefect_host),
            prefect_port=int(env.get("MODELCORE_PREFECT_PORT", cls.prefect_port)),
            mlflow_host=env.get("MODELCORE_MLFLOW_HOST", cls.mlflow_host),
            mlflow_port=int(env.get("MODELCORE_MLFLOW_PORT", cls.mlflow_port)),
            work_pool=env.get("MODELCORE_WORK_POOL", cls.work_pool),
            worker_name=env.get("MODELCORE_WORKER_NAME", cls.worker_name),
            worker_limit=int(env.get("MODELCORE_WORKER_LIMIT", cls.worker_limit)),
            worker_query_seconds=float(env.get("PREFECT_WORKER_QUERY_SECONDS", cls.worker_query_seconds)),
            mode=env.get("MODELCORE_INFRA_MODE", cls.mode),
            pg_host=env.get("MODELCORE_PG_HOST", cls.pg_host),
            pg_port=int(env.get("MODELCORE_PG_PORT", cls.pg_port)),
            workers=int(env.get("MODELCORE_WORKERS", cls.workers)),
            pool_limit=int(env.get("MODELCORE_POOL_LIMIT", cls.pool_limit)),
        )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"infra mode {self.mode!r} (MODELCORE_INFRA_MODE) is not one of {MODES}")
        if self.workers < 1 or self.pool_limit < 1:
            raise ValueError(f"MODELCORE_WORKERS ({self.workers}) and MODELCORE_POOL_LIMIT ({self.pool_limit}) >= 1")

    @property
    def cluster(self) -> bool:
        return self.mode == "cluster"

    @property
    def state_dir(self) -> Path:
        return self.home / ("infra-cluster" if self.cluster else "infra")

    @property
    def prefect_home(self) -> Path:
        return self.home / ("prefect-cluster" if self.cluster else "prefect-server")

    @property
    def postgres_root(self) -> Path:
        return self.home / "postgres"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / ("mlartifacts-cluster" if self.cluster else "mlartifacts-server")

    @property
    def prefect_api_url(self) -> str:
        return f"http://{_client_host(self.prefect_host)}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{_client_host(self.prefect_host)}:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{_client_host(self.mlflow_host)}:{self.mlflow_port}"


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def client_env(config: Config) -> dict[str, str]:
    """What a client of these servers needs: the flow runs of the worker, ``prefect deploy``, a shell."""
    return {
        "PREFECT_API_URL": config.prefect_api_url,
        "PREFECT_HOME": str(config.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": config.mlflow_url,
        "MODELCORE_PIPELINE_HOME": str(config.home),
        "MODELCORE_REPO": str(REPO),
        "MODELCORE_INFRA_MODE": config.mode,
    }


# ---------------------------------------------------------------------------------------------- services
def executable(name: str) -> str:
    """The console script installed next to this interpreter (the project's venv), else on PATH."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name!r} is not installed: pip install -e '.[pipeline]'")
    return found


def _mlflow_command(config: Config) -> tuple[list[str], dict[str, str], Path]:
    # the job runner (huey consumers for MLflow's GenAI jobs) makes start-up take minutes here
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if config.cluster:  # the URL carries the password: the environment, never the command line (ps, the log)
        env["MLFLOW_BACKEND_STORE_URI"] = postgres.url(config.postgres_root, config.pg_host, config.pg_port, "mlflow")
        store = ["--default-artifact-root", "mlflow-artifacts:/"]
    else:
        store = ["--backend-store-uri", f"sqlite:///{config.home / 'mlflow-server.db'}"]
    command = [
        executable("mlflow"),
        "server",
        *store,
        "--artifacts-destination",
        str(config.artifacts_dir),
        "--serve-artifacts",
        "--host",
        config.mlflow_host,
        "--port",
        str(config.mlflow_port),
        "--workers",
        "1",
    ]
    return command, env, config.home


def _prefect_server_command(config: Config) -> tuple[list[str], dict[str, str], Path]:
    command = [
        executable("prefect"),
        "server",
        "start",
        "--host",
        config.prefect_host,
        "--port",
        str(config.prefect_port),
        "--analytics-off",
    ]
    # SQLite waits this long for a lock before the API answers 503; the default 10 s is too short when
    # the scheduler, the worker's polls and a deploy write at once on a busy two-core machine. A transaction that
    # read before another connection wrote gets a 503 at once whatever the wait (Prefect's clients retry it, its
    # UI shows "Something went wrong" and keeps the form): the server's log says which, with its traceback.
    env = client_env(config) | {"PREFECT_SERVER_DATABASE_TIMEOUT": "60", "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"}
    if config.cluster:
        root = config.postgres_root
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres.url(
            root, config.pg_host, config.pg_port, "prefect", driver="postgresql+asyncpg"
        )
    return command, env, config.home


def _postgres_command(config: Config) -> tuple[list[str], dict[str, str], Path]:
    postgres.prepare(config.postgres_root)
    command = postgres.server_command(config.postgres_root, config.pg_host, config.pg_port)
    return command, {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}, config.postgres_root / "data"


def _postgres_health(config: Config) -> tuple[bool, str]:
    return postgres.is_ready(config.postgres_root, config.pg_host, config.pg_port)


def _prefect_worker_command(config: Config, worker_name: str) -> tuple[list[str], dict[str, str], Path]:
    command = [
        executable("prefect"),
        "worker",
        "start",
        "--pool",
        config.work_pool,
        "--type",
        "process",  # creates the pool, of this type, when it is missing
        "--name",
        worker_name,
        "--limit",
        str(config.worker_limit),
    ]
    env = client_env(config) | {"PREFECT_WORKER_QUERY_SECONDS": str(config.worker_query_seconds)}
    return command, env, REPO


def _http_ok(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"{url} answered {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"{url} answered {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"{url}: {getattr(error, 'reason', error)}"


def _http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _mlflow_health(config: Config) -> tuple[bool, str]:
    return _http_ok(f"{config.mlflow_url}/health")


def _prefect_server_health(config: Config) -> tuple[bool, str]:
    return _http_ok(f"{config.prefect_api_url}/health")


def _prefect_worker_health(config: Config, worker_name: str, since: float = 0.0) -> tuple[bool, str]:
    """The worker is ONLINE in its pool (it heartbeats to the server), and heartbeated after ``since``."""
    try:
        workers = _http_json("POST", f"{_pool_url(config)}/workers/filter", {})
    except urllib.error.HTTPError as error:
        return False, f"work pool {config.work_pool!r}: the server answered {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"Prefect server not reachable: {getattr(error, 'reason', error)}"
    for worker in workers or []:
        if worker.get("name") != worker_name:
            continue
        beat = _timestamp(worker.get("last_heartbeat_time"))
        if worker.get("status") == "ONLINE" and beat >= since:
            return True, f"worker {worker_name!r} online in pool {config.work_pool!r}"
        return False, f"worker {worker_name!r} is {worker.get('status', 'unknown').lower()}"
    return False, f"no worker {worker_name!r} in pool {config.work_pool!r}"


def _timestamp(value: str | None) -> float:
    if not value:
        return 0.0
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    command: Callable[[Config], tuple[list[str], dict[str, str], Path]]
    health: Callable[[Config], tuple[bool, str]]
    url: Callable[[Config], str]
    port: Callable[[Config], tuple[str, int] | None]
    port_setting: str = ""  # the variable that moves it, for the "port is taken" error
    user: Callable[[], str | None] = lambda: None  # the OS user it runs as (None: ours)


def worker_services(config: Config) -> dict[str, str]:
    """``{service name: the worker's name in its pool}``: one worker locally, ``config.workers`` in cluster mode."""
    if not config.cluster:
        return {"prefect-worker": config.worker_name}
    return {f"prefect-worker-{i}": f"{config.worker_name}-{i}" for i in range(1, config.workers + 1)}


def services(config: Config) -> tuple[str, ...]:
    """The services of ``config.mode``, in start order."""
    return (*(("postgres",) if config.cluster else ()), "mlflow", "prefect-server", *worker_services(config))


def registry(config: Config) -> dict[str, Service]:
    """The :class:`Service` of each of :func:`services`."""
    found = {
        "mlflow": Service(
            "mlflow",
            _mlflow_command,
            _mlflow_health,
            lambda c: c.mlflow_url,
            lambda c: (c.mlflow_host, c.mlflow_port),
            "MODELCORE_MLFLOW_PORT",
        ),
        "prefect-server": Service(
            "prefect-server",
            _prefect_server_command,
            _prefect_server_health,
            lambda c: c.prefect_ui_url,
            lambda c: (c.prefect_host, c.prefect_port),
            "MODELCORE_PREFECT_PORT",
        ),
    }
    if config.cluster:
        found["postgres"] = Service(
            "postgres",
            _postgres_command,
            _postgres_health,
            lambda c: f"postgresql://{_client_host(c.pg_host)}:{c.pg_port}",
            lambda c: (c.pg_host, c.pg_port),
            "MODELCORE_PG_PORT",
            postgres.server_user,
        )
    for name, worker in worker_services(config).items():
        found[name] = Service(
            name,
            lambda c, worker=worker: _prefect_worker_command(c, worker),
            lambda c, worker=worker: _prefect_worker_health(c, worker),
            lambda c: f"pool {c.work_pool}",
            lambda c: None,
        )
    return found


def _is_worker(name: str) -> bool:
    return name.startswith("prefect-worker")


def ensure_pool(config: Config) -> dict[str, Any]:
    """Cluster mode: the process work pool, with ``config.pool_limit`` as Prefect's pool concurrency limit.

    Created (with the process worker's default job template, as ``prefect worker start --type process`` would)
    when missing, else its limit is set; the server then hands out no more than that many runs at once,
    however many workers poll. Returns the pool as the API reads it.
    """
    from prefect.workers.process import ProcessWorker

    body = {
        "name": config.work_pool,
        "type": "process",
        "base_job_template": ProcessWorker.get_default_base_job_template(),
        "concurrency_limit": config.pool_limit,
    }
    try:
        _http_json("POST", f"{config.prefect_api_url}/work_pools/", body, timeout=30)
    except urllib.error.HTTPError as error:
        if error.code != 409:  # 409: it exists; only its limit is ours to set
            raise ServerError(f"creating work pool {config.work_pool!r}: the server answered {error.code}") from error
        _http_json("PATCH", _pool_url(config), {"concurrency_limit": config.pool_limit})
    return _http_json("GET", _pool_url(config))


def _pool_url(config: Config) -> str:
    """The API address of the configured work pool (its name quoted)."""
    return f"{config.prefect_api_url}/work_pools/{urllib.parse.quote(config.work_pool, safe='')}"


DEPLOYMENTS_FILE = REPO / "deployments" / "prefect.yaml"


def deploy(
    config: Config, prefect_file: Path = DEPLOYMENTS_FILE, log: Callable[[str], None] = print
) -> dict[str, int | None]:
    """``prefect deploy --all`` of ``prefect_file``; then every deployment on the pool is bounded by the pool's limit.

    Prefect checks a work pool's concurrency limit only when a worker polls: workers polling at the same
    moment can each be handed the pool's last free slot, so N workers may run more than the limit. A
    deployment's concurrency limit is taken atomically when a run moves to Pending; setting it to the pool's
    limit makes that limit hold. (A pool shared by several deployments is bounded per deployment.) A pool
    without a limit (local mode) leaves the file's limits as they are. Returns ``{deployment: its limit}``.
    """
    venv_bin = str(Path(sys.executable).parent)  # the flow's dependencies are this interpreter's
    done = subprocess.run(
        [executable("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)],
        cwd=REPO,
        env={**os.environ, **client_env(config), "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ServerError(f"prefect deploy of {prefect_file} failed (exit {done.returncode}):\n{tail}")
    api = config.prefect_api_url
    try:
        pool = _http_json("GET", _pool_url(config))
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise ServerError(f"reading work pool {config.work_pool!r}: the server answered {error.code}") from error
        pool = {"concurrency_limit": None}  # no worker has created it yet: nothing to copy
    limit = pool["concurrency_limit"]
    body = {"work_pools": {"name": {"any_": [config.work_pool]}}}
    bounded: dict[str, int | None] = {}
    for deployment in _http_json("POST", f"{api}/deployments/filter", body, timeout=30):
        if limit is not None:
            _http_json("PATCH", f"{api}/deployments/{deployment['id']}", {"concurrency_limit": limit}, timeout=30)
        current = _http_json("GET", f"{api}/deployments/{deployment['id']}")["global_concurrency_limit"]
        name = deployment["name"]
        bounded[name] = None if current is None else current["limit"]
        log(f"deployment {name!r} on pool {config.work_pool!r}: {bounded[name]} run(s) at once")
    return bounded


# ---------------------------------------------------------------------------------------------- processes
def _pid_file(config: Config, name: str) -> Path:
    return config.state_dir / f"{name}.pid"


def log_file(config: Config, name: str) -> Path:
    return config.state_dir / f"{name}.log"


def _process(config: Config, name: str) -> Any | None:
    """The running process recorded in ``name``'s pid file (same pid and start time), else None."""
    import psutil

    try:
        record = json.loads(_pid_file(config, name).read_text())
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["create_time"]) > 1.0 or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (OSError, ValueError, KeyError, psutil.Error):
        return None


def _spawn(config: Config, service: Service) -> Any:
    import psutil

    command, extra_env, cwd = service.command(config)
    user = service.user()
    as_user = {"user": user, "group": user, "extra_groups": []} if user else {}
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.prefect_home.mkdir(parents=True, exist_ok=True)
    with open(log_file(config, service.name), "ab") as log:
        log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **extra_env},
            cwd=cwd,
            start_new_session=True,  # its own process group: stop signals it with all its children
            **as_user,
        )
    _CHILDREN[child.pid] = child  # keeps the Popen object, so Python does not warn that it is still running
    process = psutil.Process(child.pid)
    record = {"pid": child.pid, "create_time": process.create_time(), "command": command}
    _pid_file(config, service.name).write_text(json.dumps(record))
    return process


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((_client_host(host), port)) == 0


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def terminate(processes: Sequence[Any], timeout: float) -> dict[int, tuple[float, bool]]:
    """SIGINT to each process group (as Ctrl+C would), SIGKILL to whatever is left after ``timeout``.

    Returns:
        ``{pid: (seconds until it was gone, whether SIGKILL was needed)}`` for each of ``processes``.
    """
    import psutil

    begin = time.monotonic()
    families: dict[int, list[Any]] = {}
    for process in processes:
        try:
            families[process.pid] = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            families[process.pid] = []
            continue
        try:
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGINT)
            else:
                process.send_signal(signal.SIGINT)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    gone_at: dict[int, float] = {}

    def on_gone(proc: Any) -> None:
        gone_at[proc.pid] = time.monotonic() - begin

    everyone = [p for family in families.values() for p in family]
    _, alive = psutil.wait_procs(everyone, timeout=timeout, callback=on_gone)
    # a child born while we waited (a flow run the worker had just submitted) goes too
    leftovers = {p.pid: p for p in alive}
    for process in everyone:
        try:
            for child in process.children(recursive=True):
                leftovers.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
    for leftover in leftovers.values():
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(list(leftovers.values()), timeout=10, callback=on_gone)
    report = {}
    for pid, family in families.items():
        forced = any(p.pid in leftovers for p in family)
        seconds = max((gone_at.get(p.pid, time.monotonic() - begin) for p in family), default=0.0)
        report[pid] = (seconds, forced)
    return report


# ---------------------------------------------------------------------------------------------- verbs
def start(
    config: Config, services: Sequence[str] | None = None, log: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """Start what is not running yet and wait until every service answers its health check.

    Cluster mode starts PostgreSQL first (``initdb`` the first time) and creates its role and databases.
    The two servers start at once; the workers start as soon as the Prefect server is up (in cluster mode
    after the pool and its concurrency limit are set). A service that fails to start has its log's last
    lines in the error, and what this call started is stopped.

    Args:
        config: mode, ports, hosts and the pipeline home.
        services: a subset of :func:`services` (default: all; workers need the Prefect server, the servers
            PostgreSQL in cluster mode).
        log: where progress lines go.

    Returns:
        ``{service: {"state": "started" | "running", "seconds": start-up time, "url", "pid"}}``.

    Raises:
        ServerError: a port is taken by another program, or a service did not become healthy.
    """
    services = _check_names(config, services)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    table = registry(config)
    report: dict[str, dict[str, Any]] = {}
    started: dict[str, tuple[Any, float]] = {}

    def launch(name: str) -> None:
        if name not in services:
            return
        service = table[name]
        healthy, _ = service.health(config)
        process = _process(config, name)
        if healthy and (not _is_worker(name) or process is not None):
            report[name] = {"state": "running", "seconds": 0.0, "url": service.url(config), "pid": _pid(process)}
            log(f"{name}: already running ({service.url(config)})")
            return
        if process is not None:  # ours, but not answering: replace it
            log(f"{name}: pid {process.pid} does not answer its health check; restarting it")
            terminate([process], config.stop_timeout_s)
        address = service.port(config)
        if address is not None and _port_taken(*address):
            raise ServerError(
                f"{name}: port {address[1]} on {address[0]} is taken by another program; set {service.port_setting}"
            )
        try:
            started[name] = (_spawn(config, service), time.time())
        except postgres.PostgresError as error:
            raise ServerError(str(error)) from error
        log(f"{name}: starting (log: {log_file(config, name)})")

    def wait(name: str) -> None:
        if name not in started:
            return
        process, since = started[name]
        service = table[name]
        deadline = time.monotonic() + config.start_timeout_s
        while True:
            if _is_worker(name):
                healthy, detail = _prefect_worker_health(config, worker_services(config)[name], since=since - 5)
            else:
                healthy, detail = service.health(config)
            if healthy:
                seconds = round(time.time() - since, 1)
                report[name] = {"state": "started", "seconds": seconds, "url": service.url(config), "pid": process.pid}
                log(f"{name}: up in {seconds} s ({service.url(config)})")
                return
            if not process.is_running() or process.status() == "zombie":
                raise ServerError(f"{name} exited during start-up ({detail}); log:\n{_tail(log_file(config, name))}")
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{name} not healthy after {config.start_timeout_s:.0f} s ({detail}); log:\n"
                    f"{_tail(log_file(config, name))}"
                )
            time.sleep(0.5)

    workers = list(worker_services(config))
    try:
        if config.cluster:
            launch("postgres")
            wait("postgres")
            if "postgres" in services:
                postgres.bootstrap(config.postgres_root, config.pg_port)  # idempotent: role, password, databases
                postgres.write_pgpass(config.postgres_root, _client_host(config.pg_host), config.pg_port)
        launch("mlflow")
        launch("prefect-server")
        wait("prefect-server")
        if config.cluster and any(name in services for name in workers):
            pool = ensure_pool(config)
            log(f"work pool {pool['name']!r}: type {pool['type']}, concurrency limit {pool['concurrency_limit']}")
        for name in workers:
            launch(name)
        wait("mlflow")
        for name in workers:
            wait(name)
    except postgres.PostgresError as error:
        terminate([process for process, _ in started.values()], config.stop_timeout_s)
        for name in started:
            _pid_file(config, name).unlink(missing_ok=True)
        raise ServerError(str(error)) from error
    except BaseException:
        terminate([process for process, _ in started.values()], config.stop_timeout_s)
        for name in started:
            _pid_file(config, name).unlink(missing_ok=True)
        raise
    return report


def stop(
    config: Config, services: Sequence[str] | None = None, log: Callable[[str], None] = print
) -> dict[str, dict[str, Any]]:
    """Stop the processes :func:`start` started: the workers first, then both servers at once, then PostgreSQL.

    The workers go before the Prefect server, so that they never poll a server that is gone; PostgreSQL
    goes last (SIGINT is its "fast" shutdown: sessions are closed, the data is checkpointed).

    Returns:
        ``{service: {"state": "stopped" | "not running" | "not ours", "seconds", "forced"}}``;
        ``forced`` means SIGKILL was needed after the grace period.
    """
    # workers started under a larger MODELCORE_WORKERS than this call's go too: their pid files name them
    started_workers = sorted(p.stem for p in config.state_dir.glob("prefect-worker*.pid"))
    extra = tuple(name for name in started_workers if name not in worker_services(config))
    services = _check_names(config, services) + (extra if services is None else ())
    table = registry(config)
    report: dict[str, dict[str, Any]] = {}
    for group in ((*worker_services(config), *extra), ("prefect-server", "mlflow"), ("postgres",)):
        running = {}
        for name in (n for n in group if n in services):
            process = _process(config, name)
            if process is not None:
                running[name] = process
                continue
            healthy = not _is_worker(name) and table[name].health(config)[0]
            report[name] = {"state": "not ours" if healthy else "not running", "seconds": 0.0, "forced": False}
            if healthy:
                log(f"{name}: answers at {table[name].url(config)} but was not started here; left alone")
            _pid_file(config, name).unlink(missing_ok=True)
        if not running:
            continue
        outcome = terminate(list(running.values()), config.stop_timeout_s)
        for name, process in running.items():
            _pid_file(config, name).unlink(missing_ok=True)
            seconds, forced = outcome[process.pid]
            report[name] = {"state": "stopped", "seconds": round(seconds, 1), "forced": forced}
            log(f"{name}: stopped in {seconds:.1f} s" + (" (SIGKILL after the grace period)" if forced else ""))
    return report


def _check_names(config: Config, names: Sequence[str] | None) -> tuple[str, ...]:
    known = services(config)
    if names is None:
        return known
    unknown = set(names) - set(known)
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)} in {config.mode} mode; choose from {known}")
    return tuple(names)


def status(config: Config) -> dict[str, dict[str, Any]]:
    """``{service: {"healthy", "detail", "url", "pid"}}``; ``pid`` is None for a process not started here."""
    report = {}
    table = registry(config)
    for name in services(config):
        service = table[name]
        healthy, detail = service.health(config)
        process = _process(config, name)
        if _is_worker(name) and process is None and _pid_file(config, name).exists():
            # the server keeps a dead worker ONLINE until its heartbeats are overdue: the pid file knows better
            healthy, detail = False, f"the process in {_pid_file(config, name)} is gone ({detail})"
        elif process is None and healthy:
            detail += " (not started here)"
        report[name] = {"healthy": healthy, "detail": detail, "url": service.url(config), "pid": _pid(process)}
    return report


def _pid(process: Any | None) -> int | None:
    return None if process is None else process.pid


# ---------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.servers", description=__doc__.split("\n\n")[0])
    parser.add_argument("verb", choices=("start", "stop", "status", "env", "deploy"))
    parser.add_argument("services", nargs="*", help="start/stop only these services (default: all of the mode)")
    parser.add_argument("--mode", choices=MODES, help="local (SQLite) or cluster (PostgreSQL, N workers); default: "
                        "MODELCORE_INFRA_MODE, else local")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    environ = dict(os.environ) | ({"MODELCORE_INFRA_MODE": args.mode} if args.mode else {})
    try:
        config = Config.from_env(environ)
    except ValueError as error:
        parser.error(str(error))
    if set(args.services) - set(services(config)):
        parser.error(f"unknown services {sorted(set(args.services) - set(services(config)))} in {config.mode} mode; "
                     f"choose from {services(config)}")  # fmt: skip
    quiet = args.json or args.verb == "env"
    say: Callable[[str], None] = (lambda _: None) if quiet else (lambda line: print(line, flush=True))
    if args.verb == "env":
        for key, value in client_env(config).items():
            print(f"export {key}={_shell_quote(value)}")
        return 0
    try:
        if args.verb == "start":
            report = start(config, args.services or None, log=say)
        elif args.verb == "stop":
            report = stop(config, args.services or None, log=say)
        elif args.verb == "deploy":
            report = deploy(config, log=say)
        else:
            report = status(config)
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.verb == "status":
        for name, entry in report.items():
            mark = "up  " if entry["healthy"] else "DOWN"
            pid = f"pid {entry['pid']}" if entry["pid"] else "no pid file"
            print(f"{mark} {name:<16} {entry['url']:<28} {pid:<12} {entry['detail']}")
    if args.verb in ("stop", "status") and not args.json:
        other = dataclasses.replace(config, mode="local" if config.cluster else "cluster")
        running = [name for name in services(other) if _process(other, name) is not None]
        if running:
            say(f"note: {other.mode} mode runs {', '.join(running)} in this home (--mode {other.mode})")
    if args.verb == "start":
        say(f"Prefect UI: {config.prefect_ui_url}   MLflow UI: {config.mlflow_url}")
        mode = " --mode cluster" if config.cluster else ""
        say(f'for this shell: eval "$(python -m infra.servers{mode} env)"')
    if args.verb == "status":
        return 0 if all(entry["healthy"] for entry in report.values()) else 1
    return 0


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


if __name__ == "__main__":
    sys.exit(main())
