"""Start and stop the services profile's servers on 127.0.0.1 without Docker, waiting on real readiness.

    python -m online.local_services install      (download Elasticsearch, prepare Triton's backend)
    python -m online.local_services up [--only redis,redis-events,elasticsearch,feast,triton]
    python -m online.local_services status
    python -m online.local_services down

- Redis, twice, Debian's ``redis-server`` (installed by ``.ci/setup``), each persistent in its own folder:
  ``redis`` serves the loaded versions and Feast's online store (append-only file fsync'd every second: a load
  or the event log rebuilds what an OS crash could lose), ``redis-events`` holds the posted ratings' stream, the
  services profile's event log, and fsyncs every write before it answers. Two servers, because a Redis runs
  every command in one thread: the log's fsyncs would otherwise hold every recommendation's reads.
- Elasticsearch 8: the minimal distribution from Maven Central
  (``org.elasticsearch.distribution.integ-test-zip:elasticsearch:<version>:zip``), downloaded once into
  ``<services_dir>/downloads`` and checked against its SHA-256, run on the Java 17 runtime
  (``ES_JAVA_HOME``) as an unprivileged user (Elasticsearch refuses root), single node, security off,
  512 MB heap. Ready when ``GET _cluster/health`` answers (the build has no ``GET /``).
- Feast: ``feast serve`` on the Redis online store (``feature_repo/feature_store.redis.yaml``);
  materialise first (``python -m feature_repo.publish --online-store redis``). Ready on ``GET /health``.
- Triton: the ``tritonserver`` shipped in ``nvidia-pytriton``, from its own environment (``.venv-triton``,
  see ``online/triton_requirements.txt``), serving the model repository ``python -m loaders.triton_repo``
  writes (python backend). Ready on ``GET /v2/health/ready``.

Each server writes its log to ``<services_dir>/logs/<name>.log`` and its pid to ``<services_dir>/run``.
Ports come from the settings (``RECSYS_REDIS_PORT``, ``RECSYS_ELASTICSEARCH_URL``, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from contracts.errors import CommandError
from contracts.settings import LocalServicesSettings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ES_VERSION = "8.19.3"
ES_URL = ("https://repo1.maven.org/maven2/org/elasticsearch/distribution/integ-test-zip/elasticsearch/"
          f"{ES_VERSION}/elasticsearch-{ES_VERSION}.zip")
# Maven Central serves no checksum file for this artifact; this is the SHA-256 of the file it served.
ES_SHA256 = "c4b08b70523700efde9f3e4c9287229f085c2c0db1efca5c6a7d65abbdb9f2e1"
ES_USER = "recsys-es"
SERVICE_NAMES = ("redis", "redis-events", "elasticsearch", "feast", "triton")


class ServiceError(CommandError):
    """A server could not be installed or started; the message says which and where its log is."""


@dataclass
class Service:
    name: str
    port: int  # names its log and pid files, so servers on other ports (the tests') never collide
    command: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cwd: Path | None = None
    startup_seconds: float = 120.0


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"http://{url}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


# --- Redis --------------------------------------------------------------------------------------------

def _redis(settings: LocalServicesSettings, name: str, host: str, port: int, fsync: str) -> Service:
    """A persistent Redis in its own folder, so a restarted one serves what it held again, as a production
    Redis would."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("redis-server is not installed: run .ci/setup (Debian's redis-server package)")

    def ready() -> bool:
        import redis

        return bool(redis.Redis(host=host, port=port, socket_timeout=1).ping())

    state = (settings.services_dir / f"redis-{port}").resolve()
    state.mkdir(parents=True, exist_ok=True)
    command = [binary, "--bind", host, "--port", str(port), "--dir", str(state),
               "--save", "3600 1", "--appendonly", "yes", "--appendfsync", fsync]
    return Service(name, port, command, ready)


def redis_service(settings: LocalServicesSettings) -> Service:
    """The loaded versions and Feast's online store: what a reload or the event log's replay writes again."""
    return _redis(settings, "redis", settings.redis_host, settings.redis_port, "everysec")


def events_redis_service(settings: LocalServicesSettings) -> Service:
    """The posted ratings' stream (online/redis_event_log.py): a rating is on disk before it is acknowledged."""
    return _redis(settings, "redis-events", settings.events_redis_host, settings.events_redis_port, "always")


# --- Elasticsearch ------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install_elasticsearch(cache: Path) -> Path:
    """The unpacked distribution (downloaded and checked once)."""
    home = cache / f"elasticsearch-{ES_VERSION}"
    if (home / "bin" / "elasticsearch").exists():
        return home
    archive = cache / "downloads" / f"elasticsearch-{ES_VERSION}.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    if not archive.exists() or _sha256(archive) != ES_SHA256:
        log.info("downloading %s", ES_URL)
        partial = archive.with_suffix(".part")
        with urllib.request.urlopen(ES_URL, timeout=60) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
        found = _sha256(partial)
        if found != ES_SHA256:
            partial.unlink()
            raise ServiceError(f"{ES_URL}: SHA-256 {found}, expected {ES_SHA256}")
        partial.rename(archive)
    staging = cache / f".elasticsearch-{ES_VERSION}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(staging)
    unpacked = staging / f"elasticsearch-{ES_VERSION}"
    for script in (unpacked / "bin").iterdir():  # zipfile drops the executable bits
        script.chmod(0o755)
    jdk_tools = unpacked / "lib" / "tools"
    if jdk_tools.exists():
        for tool in jdk_tools.rglob("*"):
            if tool.is_file() and tool.suffix in ("", ".sh"):
                tool.chmod(0o755)
    unpacked.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    return home


def java17_home() -> Path:
    if "ES_JAVA_HOME" in os.environ:
        return Path(os.environ["ES_JAVA_HOME"])
    java = shutil.which("java")
    if java is None:
        raise ServiceError("no java on PATH: run .ci/setup (openjdk-17-jre-headless) or set ES_JAVA_HOME")
    return Path(os.path.realpath(java)).parent.parent


def _unprivileged_user(name: str) -> str | None:
    """Elasticsearch refuses to run as root: as root, run it as ``name`` (created if missing)."""
    if os.geteuid() != 0:
        return None
    if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True)
    return name


def elasticsearch_service(settings: LocalServicesSettings) -> Service:
    home = install_elasticsearch(settings.services_cache).resolve()
    host, port = _host_port(settings.elasticsearch_url, 9200)
    state = (settings.services_dir / f"elasticsearch-{port}").resolve()
    for folder in ("data", "logs", "tmp"):
        (state / folder).mkdir(parents=True, exist_ok=True)
    user = _unprivileged_user(ES_USER)
    if user is not None:  # it writes its keystore under config/ and its state under data, logs, tmp
        subprocess.run(["chown", "-R", user, str(home / "config"), str(state)], check=True)
        # It must be able to reach its own folders: every parent must be traversable.
        for parent in {*home.resolve().parents, *state.resolve().parents}:
            if not parent.stat().st_mode & 0o001:
                log.warning("letting other users traverse %s (Elasticsearch runs as %s)", parent, user)
                parent.chmod(parent.stat().st_mode | 0o001)
    env = {"ES_JAVA_HOME": str(java17_home()), "ES_JAVA_OPTS": "-Xms512m -Xmx512m",
           "ES_TMPDIR": str(state / "tmp")}
    command = [str(home / "bin" / "elasticsearch"), "-E", "discovery.type=single-node",
               "-E", "xpack.security.enabled=false", "-E", f"network.host={host}", "-E", f"http.port={port}",
               "-E", "transport.port=0", "-E", f"path.data={state / 'data'}", "-E", f"path.logs={state / 'logs'}",
               "-E", "cluster.name=recsys"]
    url = settings.elasticsearch_url.rstrip("/")
    return Service("elasticsearch", port, command, lambda: _http_ok(f"{url}/_cluster/health"), env, user,
                   startup_seconds=180.0)


# --- Feast feature server -----------------------------------------------------------------------------

def feast_service(settings: LocalServicesSettings) -> Service:
    from feature_repo.publish import REPO, cli_environment

    host, port = _host_port(settings.feast_server_url, 6566)
    feast = Path(sys.executable).parent / "feast"
    url = settings.feast_server_url.rstrip("/")
    return Service("feast", port, [str(feast), "--chdir", str(REPO), "serve", "--host", host, "--port", str(port),
                             "--no-access-log", "--workers", "1",
                                    # Its registry refresh blocks requests for seconds: read it once per start
                                    # (a new apply restarts the server).
                                    "--registry_ttl_sec", "86400"],
                   lambda: _http_ok(f"{url}/health"), cli_environment(settings, "redis", settings.redis_address),
                   cwd=REPO)


# --- Triton -------------------------------------------------------------------------------------------

def _triton_paths(venv: Path) -> tuple[Path, Path, Path, str]:
    """(tritonserver binary, its package folder, the environment's libpython folder, its Python version)."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise ServiceError(f"{venv} does not exist: run .ci/setup (it installs online/triton_requirements.txt)")
    script = ("import pytriton, sys, sysconfig; print(pytriton.__path__[0]); "
              "print(sysconfig.get_config_var('LIBDIR')); print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
    probe = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True)
    package, libdir, version = probe.stdout.split()
    server_root = Path(package) / "tritonserver"
    return server_root / "bin" / "tritonserver", server_root, Path(libdir), version


def triton_backends(cache: Path, venv: Path) -> Path:
    """A backends folder whose python backend holds the stub for this Python (else the server hangs)."""
    _, server_root, _, version = _triton_paths(venv)
    backends = cache / "triton-backends"
    python_backend = backends / "python"
    if not (python_backend / "triton_python_backend_stub").exists():
        python_backend.mkdir(parents=True, exist_ok=True)
        for item in (server_root / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, python_backend / item.name)
        stub = server_root / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    return backends


def triton_service(settings: LocalServicesSettings) -> Service:
    binary, server_root, libdir, _ = _triton_paths(settings.triton_venv)
    repository = settings.services_dir / "triton" / "models"
    if not repository.exists():
        raise ServiceError(f"{repository} does not exist: run python -m loaders.triton_repo first")
    host, grpc_port = _host_port(settings.triton_url, 8001)
    http_port = grpc_port + 1  # for readiness only; Triton's default HTTP port 8000 is the app's
    # The stub finds its Python packages through python3 on PATH (PYTHONPATH is ignored), libpython in
    # LIBDIR, and the libraries the wheel vendors in nvidia_pytriton.libs (else the model never loads).
    vendored = server_root.parent.parent / "nvidia_pytriton.libs"
    env = {"PATH": f"{settings.triton_venv.resolve() / 'bin'}:{os.environ.get('PATH', '')}",
           "LD_LIBRARY_PATH": f"{libdir}:{vendored}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    command = [str(binary), f"--model-repository={repository.resolve()}",
               f"--backend-directory={triton_backends(settings.services_cache, settings.triton_venv).resolve()}",
               f"--http-address={host}", f"--http-port={http_port}", f"--grpc-address={host}",
               f"--grpc-port={grpc_port}", "--allow-metrics=false", "--log-verbose=0",
               "--model-control-mode=poll", "--repository-poll-secs=5"]
    return Service("triton", grpc_port, command, lambda: _http_ok(f"http://{host}:{http_port}/v2/health/ready"), env)


BUILDERS: dict[str, Callable[[LocalServicesSettings], Service]] = {
    "redis": redis_service, "redis-events": events_redis_service, "elasticsearch": elasticsearch_service,
    "feast": feast_service, "triton": triton_service,
}


# --- processes ----------------------------------------------------------------------------------------

def service_port(settings: LocalServicesSettings, name: str) -> int:
    return {"redis": settings.redis_port, "redis-events": settings.events_redis_port,
            "elasticsearch": _host_port(settings.elasticsearch_url, 9200)[1],
            "feast": _host_port(settings.feast_server_url, 6566)[1],
            "triton": _host_port(settings.triton_url, 8001)[1]}[name]


def _pid_file(settings: LocalServicesSettings, name: str) -> Path:
    return settings.services_dir / "run" / f"{name}-{service_port(settings, name)}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(settings: LocalServicesSettings, name: str) -> int | None:
    path = _pid_file(settings, name)
    if not path.exists():
        return None
    pid = int(path.read_text())
    return pid if _alive(pid) else None


def start(service: Service, settings: LocalServicesSettings) -> subprocess.Popen:
    """Start one server in its own session and wait until it is ready (raise with its log's tail if not)."""
    logs = settings.services_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{service.name}-{service.port}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(service.command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, **service.env}, cwd=service.cwd, start_new_session=True,
                                   # As another user, drop root's groups too: else root-owned folders'
                                   # group bits (often none) would apply to it instead of the others' bits.
                                   **({"user": service.user, "group": service.user, "extra_groups": []}
                                      if service.user else {}))
    _pid_file(settings, service.name).parent.mkdir(parents=True, exist_ok=True)
    _pid_file(settings, service.name).write_text(str(process.pid))
    deadline = time.monotonic() + service.startup_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{service.name} exited with code {process.returncode}: {_tail(log_path)}")
        try:
            if service.ready():
                log.info("%s ready (pid %d, log %s)", service.name, process.pid, log_path)
                return process
        except Exception:  # not answering yet looks different for every server
            pass
        time.sleep(0.3)
    stop_process(process)
    raise ServiceError(f"{service.name} not ready after {service.startup_seconds:.0f} s: {_tail(log_path)}")


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"last lines of {path}:\n" + "\n".join(text)


def stop_process(process: subprocess.Popen | int, timeout: float = 30.0) -> None:
    """SIGTERM to the server's whole process group (Triton's stubs, Feast's workers), SIGKILL if it hangs."""
    pid = process.pid if isinstance(process, subprocess.Popen) else process
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(process, subprocess.Popen):
            if process.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if isinstance(process, subprocess.Popen):
        process.wait()


def up(settings: LocalServicesSettings, names: Sequence[str] = SERVICE_NAMES) -> None:
    for name in names:
        pid = running_pid(settings, name)
        if pid is not None:
            log.info("%s already running (pid %d)", name, pid)
            continue
        start(BUILDERS[name](settings), settings)


def down(settings: LocalServicesSettings, names: Sequence[str] = SERVICE_NAMES) -> None:
    for name in reversed(names):
        pid = running_pid(settings, name)
        if pid is not None:
            stop_process(pid)
            log.info("%s stopped (pid %d)", name, pid)
        _pid_file(settings, name).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("install", "up", "down", "status"))
    parser.add_argument("--only", default=",".join(SERVICE_NAMES), help="comma-separated subset of the services")
    LocalServicesSettings.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = LocalServicesSettings.from_args(args)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(SERVICE_NAMES))
    if unknown:
        parser.error(f"unknown service(s) {unknown}; choose from {', '.join(SERVICE_NAMES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.action == "install":
        print(f"elasticsearch: {install_elasticsearch(settings.services_cache)}")
        print(f"triton backends: {triton_backends(settings.services_cache, settings.triton_venv)}")
        return
    if args.action == "up":
        up(settings, names)
    elif args.action == "down":
        down(settings, names)
    for name in names:
        pid = running_pid(settings, name)
        print(f"{name} (port {service_port(settings, name)}): {'running, pid ' + str(pid) if pid else 'stopped'}")


if __name__ == "__main__":
    main()
