"""Throwaway RabbitMQ nodes and clusters for the tests, made of the Debian rabbitmq-server on this machine.

Each node is a child process of the test run with its own node name (``cm-test-<run>-<n>@localhost``), its own
free loopback ports (AMQP, Erlang distribution, optionally AMQPS), its own config, data and log folders under a
temporary folder, the management plugin off, and an Erlang cookie shared by the cluster (``HOME`` points at the
folder holding ``.erlang.cookie``, for the nodes and for ``rabbitmqctl``). The broker on 127.0.0.1:5672 and its
files are never touched: nothing here reads ``/etc/rabbitmq`` or ``/var/lib/rabbitmq``.

    with RabbitCluster(tmp_path, size=3) as cluster:     # started, clustered with join_cluster, ready
        cluster.failover_url                                 # "pyamqp://guest:guest@127.0.0.1:P1//;pyamqp://..."
        cluster.nodes[0].kill()                              # SIGKILL on the node's Erlang VM (beam.smp)
        cluster.nodes[0].restart()                           # back, rejoining the cluster from its data folder
    # every node started here is stopped, also when the block raised

The scripts are run from ``/usr/lib/rabbitmq/bin``: Debian's ``/usr/sbin`` wrappers switch to the ``rabbitmq``
user and its home, whose cookie is the system broker's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import pytest

from conftest import IN_CI
from support.tls import CertificateFiles

DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
STARTUP_TIMEOUT = 90.0  # seconds for one node to boot; a cold boot takes about 4 s alone, more with 2 busy cores
STOP_TIMEOUT = 60.0
CTL_TIMEOUT = 120.0
#: ports rabbitmqctl itself listens on for its distribution connection (RABBITMQ_CTL_DIST_PORT_MIN..MAX)
CLI_DIST_PORTS = range(35672, 35683)
LOG_TAIL_LINES = 30
NOT_FOUND = f"not found in {DEBIAN_SCRIPTS} nor on PATH (Debian package rabbitmq-server)"


class RabbitNodeError(RuntimeError):
    """A test node could not be started, clustered, queried or stopped; the message names the node and its log."""


def find_script(name: str) -> Path | None:
    """The path of a RabbitMQ script (``rabbitmq-server``, ``rabbitmqctl``) that runs as the current user."""
    candidate = DEBIAN_SCRIPTS / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def script(name: str) -> str:
    """``find_script`` as a command-line word, or RabbitNodeError when the script is missing."""
    found = find_script(name)
    if found is None:
        raise RabbitNodeError(f"{name} {NOT_FOUND}")
    return str(found)


def missing_rabbitmq_server() -> str | None:
    """Why test nodes cannot be started here, or None when rabbitmq-server and rabbitmqctl are installed."""
    missing = [name for name in ("rabbitmq-server", "rabbitmqctl") if find_script(name) is None]
    if missing:
        return f"{' and '.join(missing)} {NOT_FOUND}"
    return None


def require_rabbitmq_server() -> None:
    """Nothing when test nodes can be started here; otherwise a failure in CI, a loud skip elsewhere."""
    reason = missing_rabbitmq_server()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason}: CI=true, so this is a failure, not a skip", pytrace=False)
    warnings.warn(f"SKIPPING RABBITMQ CLUSTER/TLS TESTS: {reason}", stacklevel=2)
    sys.stderr.write(f"\n*** SKIPPING RABBITMQ CLUSTER/TLS TESTS: {reason} ***\n")
    pytest.skip(reason)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on now (asked from the kernel, every probe
    held open until all are chosen), none in rabbitmqctl's own range."""
    with contextlib.ExitStack() as probes:
        ports: list[int] = []
        while len(ports) < count:
            probe = probes.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            if port not in CLI_DIST_PORTS:
                ports.append(port)
        return ports


def accepts_connections(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@attrs.frozen
class TlsListener:
    """An AMQPS listener: its port, the PEM files it uses and whether it refuses clients without a certificate."""

    port: int
    files: CertificateFiles
    require_client_certificate: bool

    def config_lines(self) -> list[str]:
        return [
            f"listeners.ssl.1 = 127.0.0.1:{self.port}",
            f"ssl_options.cacertfile = {self.files.ca}",
            f"ssl_options.certfile = {self.files.server_certificate}",
            f"ssl_options.keyfile = {self.files.server_key}",
            "ssl_options.verify = verify_peer",
            f"ssl_options.fail_if_no_peer_cert = {str(self.require_client_certificate).lower()}",
        ]


@attrs.define(eq=False)
class RabbitNode:
    """One RabbitMQ node run as a child process; ``start``/``wait_until_running``, ``stop``, ``kill``, ``restart``."""

    name: str
    amqp_port: int
    dist_port: int
    folder: Path = attrs.field(repr=False)
    home: Path = attrs.field(repr=False)
    tls: TlsListener | None = attrs.field(default=None, repr=False)
    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"pyamqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def tls_url(self) -> str:
        if self.tls is None:
            raise RabbitNodeError(f"{self.name} has no TLS listener")
        return f"amqps://guest:guest@127.0.0.1:{self.tls.port}//"

    @property
    def log_file(self) -> Path:
        return self.folder / "log" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "node.pid"

    @property
    def running(self) -> bool:
        """Whether the node's process is alive (it may still be booting)."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Launches the node and returns at once: call ``wait_until_running`` before using it."""
        if self.running:
            raise RabbitNodeError(f"{self.name} is already running")
        self._write_config()
        self.pid_file.unlink(missing_ok=True)  # the node writes it again when it boots
        with (self.folder / "stdout.log").open("ab") as output:
            self._process = subprocess.Popen(
                [*_die_with_parent(), script("rabbitmq-server")],
                cwd=self.folder,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest does not reach it: the fixture stops it cleanly
            )

    def wait_until_running(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Waits until the node accepts AMQP connections and ``rabbitmqctl await_startup`` says it has booted."""
        deadline = time.monotonic() + timeout
        while not accepts_connections(self.amqp_port):
            if not self.running:
                code = self._process.returncode if self._process else None
                raise RabbitNodeError(f"{self.name} exited with code {code} while starting{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RabbitNodeError(
                    f"{self.name} does not accept AMQP on 127.0.0.1:{self.amqp_port} after {timeout:.0f} s"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)
        remaining = max(1, int(deadline - time.monotonic()))
        self.ctl("await_startup", "--timeout", str(remaining))

    def beam_pid(self) -> int:
        """The PID of the node's Erlang VM (beam.smp), from the pid file the node writes when it boots; checked to
        be a child of the start script this object launched."""
        try:
            pid = int(self.pid_file.read_text().strip())
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError) as exc:
            raise RabbitNodeError(f"{self.name}: no running VM in pid file {self.pid_file} (is it running?)") from exc
        if self._process is None or parent != self._process.pid:
            raise RabbitNodeError(f"{self.name}: pid {pid} in {self.pid_file} is not a process this test started")
        return pid

    def kill(self) -> None:
        """Kills the node hard (SIGKILL on its Erlang VM, as a crash or power loss would) and waits until it is gone."""
        if not self.running:
            raise RabbitNodeError(f"{self.name} is not running: nothing to kill")
        os.kill(self.beam_pid(), signal.SIGKILL)
        assert self._process is not None
        try:
            self._process.wait(STOP_TIMEOUT)  # the start script exits as soon as the VM is gone
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"{self.name} still runs {STOP_TIMEOUT:.0f} s after SIGKILL") from exc

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Starts a stopped or killed node again on the same ports and data folder, and waits until it runs."""
        self.start()
        self.wait_until_running(timeout)

    def terminate(self) -> None:
        """Asks a running node to shut down cleanly (SIGTERM to its start script, which stops the VM) and returns
        at once; ``stop`` waits."""
        if self.running:
            assert self._process is not None
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()

    def stop(self) -> None:
        """Stops the node if it runs: a clean shutdown, then SIGKILL to its process group after ``STOP_TIMEOUT``.
        Never raises for a node that is already gone."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"\n*** {self.name} ignored SIGTERM for {STOP_TIMEOUT:.0f} s: killing it ***\n")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the group holds only its processes
            process.wait(STOP_TIMEOUT)

    # -- rabbitmqctl -------------------------------------------------------------------------------------------------

    def ctl(self, *arguments: str, timeout: float = CTL_TIMEOUT) -> str:
        """Runs ``rabbitmqctl -n <node> <arguments>``; its output, or RabbitNodeError with what it printed."""
        command = [script("rabbitmqctl"), "-n", self.name, *arguments]
        what = f"rabbitmqctl {' '.join(arguments)} on {self.name}"
        try:
            done = subprocess.run(
                command, env=self.environment(), capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"{what}: no answer in {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise RabbitNodeError(
                f"{what} failed with code {done.returncode}:\n{done.stdout.strip()}\n{done.stderr.strip()}"
                f"{self.log_tail()}"
            )
        return done.stdout

    def ctl_json(self, *arguments: str) -> Any:
        """A rabbitmqctl command's answer parsed from ``--formatter json``."""
        return json.loads(self.ctl(*arguments, "--formatter", "json"))

    def running_nodes(self) -> set[str]:
        """The nodes this node sees running in its cluster (itself included)."""
        return set(self.ctl_json("cluster_status")["running_nodes"])

    # -- files -------------------------------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The environment of the node and of the CLI tools talking to it: nothing inherited from a RabbitMQ or
        Erlang setting of the caller, files and ports of this node only."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **inherited,
            "HOME": str(self.home),  # holds .erlang.cookie
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            # distribution, and an epmd the VM starts when none runs, on loopback only
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def log_tail(self) -> str:
        """The last lines of the node's logs, to append to an error message."""
        parts = []
        for path in (self.folder / "stdout.log", self.log_file):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                parts.append(f"\n--- last lines of {path} ---\n" + "\n".join(tail))
        return "".join(parts)

    def _write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}", *(self.tls.config_lines() if self.tls else [])]
        (self.folder / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.folder / "rabbitmq-env.conf").write_text("# every setting comes from the environment\n")
        (self.folder / "enabled_plugins").write_text("[].\n")  # no management plugin, no plugin at all


class RabbitCluster:
    """``size`` RabbitMQ nodes clustered with ``rabbitmqctl join_cluster``; a context manager that starts them all
    and stops every node it started on exit, whatever happened. ``tls`` gives each node an AMQPS listener too."""

    def __init__(
        self,
        folder: Path,
        size: int = 3,
        *,
        tls: CertificateFiles | None = None,
        require_client_certificate: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"RabbitCluster size must be at least 1, got {size}")
        run = uuid.uuid4().hex[:6]  # node names are unique on the machine's epmd: test runs may overlap
        ports = iter(free_ports(size * (3 if tls else 2)))
        self.folder = folder
        self.home = folder / "home"
        self.nodes = [
            RabbitNode(
                name=f"cm-test-{run}-{number}@localhost",
                amqp_port=next(ports),
                dist_port=next(ports),
                folder=folder / f"node{number}",
                home=self.home,
                tls=TlsListener(next(ports), tls, require_client_certificate) if tls else None,
            )
            for number in range(1, size + 1)
        ]
        #: seconds the last ``start`` took to boot every node, then to form the cluster
        self.boot_seconds = 0.0
        self.cluster_seconds = 0.0

    def __repr__(self) -> str:
        return f"RabbitCluster({', '.join(f'{n.name}:{n.amqp_port}' for n in self.nodes)})"

    def __enter__(self) -> RabbitCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def failover_url(self) -> str:
        """Every node's URL in kombu's failover syntax (``url1;url2;url3``)."""
        return ";".join(self.urls)

    @property
    def names(self) -> set[str]:
        return {node.name for node in self.nodes}

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Boots every node at once, waits for each, then joins nodes 2..n to node 1 and waits until every node
        sees all of them running."""
        self._write_cookie()
        began = time.monotonic()
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_until_running(timeout)
        booted = time.monotonic()
        self.boot_seconds = booted - began
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.name)
            node.ctl("start_app")
        self.wait_until_clustered(timeout)
        self.cluster_seconds = time.monotonic() - booted

    def wait_until_clustered(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Waits until every node sees every node of the cluster running."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while (seen := node.running_nodes()) != self.names:
                if time.monotonic() > deadline:
                    raise RabbitNodeError(
                        f"{node.name} sees {sorted(seen)} running, not all of {sorted(self.names)}, "
                        f"after {timeout:.0f} s{node.log_tail()}"
                    )
                time.sleep(0.2)

    def node_on_port(self, port: int) -> RabbitNode:
        """The node whose AMQP (or AMQPS) listener is on ``port``."""
        for node in self.nodes:
            if port in (node.amqp_port, node.tls.port if node.tls else None):
                return node
        raise RabbitNodeError(f"no node of {self!r} listens on port {port}")

    def stop(self) -> None:
        """Stops every node that runs, all at once (a node shutting down waits for its peers' answers)."""
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.stop()

    def _write_cookie(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)  # Erlang refuses a cookie file others can read


def _die_with_parent() -> list[str]:
    """A command prefix that makes the start script receive SIGTERM when the test process dies, even by SIGKILL
    (util-linux ``setpriv --pdeathsig``, Linux's PR_SET_PDEATHSIG), so that no node outlives the test run; the
    script turns SIGTERM into a clean shutdown. Empty where setpriv is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
