"""`ray up` for real: cluster-onprem.yaml against this machine over SSH on loopback.

The "remote" head is this machine, reached the way the launcher reaches any node: `sshd` from
Debian's openssh-server (installed here if missing) listens on a free loopback port with a host
key and a login key made for the test. Only the site-specific values of cluster-onprem.yaml are
changed: the head's address (127.0.0.1, no workers), the SSH user and key, a ProxyCommand that
reaches the test's port, and the cluster's name. Everything else (file_mounts, setup_commands,
token auth on `ray start`, GPUs declared through STUDY_NODE_GPUS) runs as written.

Isolation, so that the cluster cannot touch anything else on the machine:
- sshd runs in its own PID and mount namespaces (`unshare`). Every process of the cluster lives
  there: the file's own `ray stop` sees only them, and killing the namespace's first process
  ends them all. /tmp/ray is a folder of the test inside that namespace.
- The node's home (`~`) is a folder of the test, mounted over this user's home inside the
  node's mount namespace; its ~/.bashrc puts the node's Python first on PATH, as a lab's node would. The node's Python is a venv of the test
  that sees this interpreter's packages (torch, ray) through a .pth file, so setup_commands'
  `pip install -e ~/cifar-study` installs only the copied checkout.
- The launcher runs with HOME set to another folder of the test, holding the cluster's own
  token (~/.ray/auth_token, copied to the head by file_mounts) and the login key.
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time

import pytest
import yaml

from tests.processes import alive, children_of, experiment_rows, free_port

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGES = ["openssh-server", "rsync", "netcat-openbsd", "iproute2"]
TOOLS = ["/usr/sbin/sshd", "rsync", "nc", "ssh", "ssh-keygen", "unshare", "ip"]

STUDY = """
name: launched
dataset: synthetic
scheduler: {{type: fifo}}
space:
  seed: {{grid: {seeds_list}}}
  epochs: 2
  model: cnn
  channels: 8
  fc_width: 32
  num_train: 512
  num_test: 128
"""


def missing_tools() -> list[str]:
    return [t for t in TOOLS if not (os.path.exists(t) if t.startswith("/") else shutil.which(t))]


def cannot_run(reason: str) -> None:
    """Skip on a machine that cannot run this test; in CI (STUDY_CI=1) that is a failure."""
    if os.environ.get("STUDY_CI") == "1":
        pytest.fail(f"CI must run the launcher test: {reason}")
    pytest.skip(reason)


def ensure_tools() -> None:
    """Install sshd, rsync and nc from Debian's packages when missing (needs root and apt-get)."""
    if not missing_tools():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        cannot_run(f"needs {', '.join(missing_tools())}: install {' '.join(PACKAGES)} (or run as root with apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not missing_tools(), f"still missing after apt-get: {missing_tools()}"


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return (
            s.connect_ex(("127.0.0.1", port)) == 0
            or s.connect_ex((socket.gethostbyname(socket.gethostname()), port)) == 0
        )


def own_address() -> str:
    """This machine's own network address (no packet is sent: a UDP socket only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))
        return s.getsockname()[0]


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def namespace_processes(namespace: str) -> dict[int, str]:
    """Every process in one PID namespace, with its command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_namespace(int(entry)) == namespace and alive(int(entry)):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
    return found


class Namespace:
    """A network namespace with a veth pair to this machine: a second address for a second node.

    This machine's end gets 10.213.N.1, the namespace's end 10.213.N.2; the namespace routes
    everything through this machine, so a node inside reaches the head and the head reaches it.
    Only ever these two addresses, both on this machine.
    """

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name, host_if, inner_if = f"st{tag}", f"vh{tag}", f"vn{tag}"
        net = 1 + secrets.randbelow(250)
        self.host_address, self.address = f"10.213.{net}.1", f"10.213.{net}.2"
        run(["ip", "netns", "add", self.name])
        try:
            for cmd in (
                ["ip", "link", "add", host_if, "type", "veth", "peer", "name", inner_if],
                ["ip", "link", "set", inner_if, "netns", self.name],
                ["ip", "addr", "add", f"{self.host_address}/30", "dev", host_if],
                ["ip", "link", "set", host_if, "up"],
                ["ip", "-n", self.name, "addr", "add", f"{self.address}/30", "dev", inner_if],
                ["ip", "-n", self.name, "link", "set", inner_if, "up"],
                ["ip", "-n", self.name, "link", "set", "lo", "up"],
                ["ip", "-n", self.name, "route", "add", "default", "via", self.host_address],
            ):
                run(cmd)
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)  # takes the veth pair along


class Launcher:
    """The machine running `ray up`: its own HOME, with the login key and the cluster's token."""

    def __init__(self, base: str) -> None:
        self.home = os.path.join(base, "launcher-home")
        self.key = os.path.join(self.home, ".ssh", "id_ed25519")
        os.makedirs(os.path.dirname(self.key), mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key])
        self.token = secrets.token_hex(32)
        os.makedirs(os.path.join(self.home, ".ray"))
        with open(os.path.join(self.home, ".ray", "auth_token"), "w") as f:
            f.write(self.token)
        self.secret = os.path.join(self.home, ".config", "cifar-study", "secret")  # study's signing key
        os.makedirs(os.path.dirname(self.secret), mode=0o700)
        with open(os.open(self.secret, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(secrets.token_bytes(32))


class SshNode:
    """A machine to `ray up`: sshd in its own PID and mount namespaces (and network namespace,
    if given), listening on `address`:`port`, with its own home, Python and /tmp/ray."""

    def __init__(self, base: str, name: str, address: str, port: int, launcher: Launcher, netns: str | None = None):
        self.base = os.path.join(base, name)
        self.address, self.port = address, port
        self.home = os.path.join(self.base, "home")  # the node's ~
        for folder in (self.home, os.path.join(self.base, "ray-tmp")):
            os.makedirs(folder, mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(self.base, "host_key")])
        shutil.copy(launcher.key + ".pub", os.path.join(self.base, "authorized_keys"))
        self.make_python()
        with open(os.path.join(self.home, ".bashrc"), "w") as f:
            # What a lab's node has in ~/.bashrc: its Python environment first on PATH, and here
            # one logical GPU declared for the start commands (this machine has none).
            f.write(f"export PATH={self.venv}/bin:$PATH\nexport STUDY_NODE_GPUS=1\n")
            if netns:  # no route to the package index: pip builds with the setuptools it has
                f.write("export PIP_NO_BUILD_ISOLATION=0\n")
        config = os.path.join(self.base, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"Port {port}\nListenAddress {address}\nHostKey {self.base}/host_key\n"
                f"PidFile {self.base}/sshd.pid\nAuthorizedKeysFile {self.base}/authorized_keys\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder
        os.makedirs("/tmp/ray", exist_ok=True)
        # Inside the node's mount namespace: its own /tmp/ray, and its own home folder mounted
        # over this user's home, so that `~` is the node's home for every program, ssh's `-i
        # ~/ray_bootstrap_key.pem` on the head included (ssh takes `~` from the password file,
        # not $HOME). What the node's Python needs from the real home (pyenv's interpreter, say)
        # is mounted back into it first.
        real_home = os.path.expanduser("~")
        mounts = [f"mount --bind {self.base}/ray-tmp /tmp/ray"]
        for path in sorted({sys.base_prefix, os.path.realpath(sys.base_prefix), sys.prefix}):
            if path.startswith(real_home + os.sep):
                target = os.path.join(self.home, os.path.relpath(path, real_home))
                os.makedirs(target, exist_ok=True)
                mounts.append(f"mount --bind {path} {target}")
        mounts.append(f"mount --rbind {self.home} {real_home}")  # --rbind: with the mounts inside
        inside = " && ".join([*mounts, f"exec /usr/sbin/sshd -D -e -f {config}"])
        self.log = open(os.path.join(self.base, "sshd.log"), "w")
        prefix = ["ip", "netns", "exec", netns] if netns else []  # `ip netns exec` execs: same PID
        self.unshare = subprocess.Popen(
            [*prefix, "unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", inside],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while not (self.namespace and self.listening()):
            assert self.unshare.poll() is None and time.time() < deadline, self.sshd_log()
            time.sleep(0.2)

    def make_python(self) -> None:
        """The node's Python: a venv that sees this interpreter's packages (torch, ray, pip)."""
        self.venv = os.path.join(self.base, "venv")
        run([sys.executable, "-m", "venv", "--without-pip", self.venv])
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        with open(os.path.join(self.venv, "lib", version, "site-packages", "host-packages.pth"), "w") as f:
            f.write("\n".join({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}) + "\n")
        ray_cli = os.path.join(self.venv, "bin", "ray")  # `ray` run by the node's own Python
        with open(ray_cli, "w") as f:
            f.write(f"#!{self.venv}/bin/python\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
        os.chmod(ray_cli, 0o755)

    @property
    def namespace(self) -> str | None:
        kids = children_of(self.unshare.pid)
        return pid_namespace(kids[0]) if kids else None

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex((self.address, self.port)) == 0

    def sshd_log(self) -> str:
        with open(os.path.join(self.base, "sshd.log")) as f:
            return f.read()[-3000:]

    def leftover(self) -> dict[int, str]:
        """Processes in the node's PID namespace other than sshd itself."""
        return {p: c for p, c in namespace_processes(self.namespace).items() if "sshd" not in c}

    def stop(self) -> None:
        """Kill the namespace's first process: the kernel then ends every process in it."""
        namespace = self.namespace
        for pid in children_of(self.unshare.pid):
            if pid_namespace(pid) == namespace:
                os.kill(pid, signal.SIGKILL)
                break
        self.unshare.wait(timeout=30)
        self.log.close()


def run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{cmd[:3]} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def cluster_file(path: str, launcher: Launcher, head: SshNode, workers: list[SshNode]) -> str:
    """cluster-onprem.yaml with this machine's site-specific values filled in."""
    with open(os.path.join(ROOT, "cluster-onprem.yaml")) as f:
        config = yaml.safe_load(f)
    config["cluster_name"] = f"study-test-{secrets.token_hex(4)}"
    config["provider"].update(head_ip=head.address, worker_ips=[w.address for w in workers])
    config["auth"] = {
        "ssh_user": "root" if os.geteuid() == 0 else os.environ.get("USER", "root"),
        "ssh_private_key": launcher.key,
        "ssh_proxy_command": f"nc %h {head.port}",  # Ray's auth has no port key; every node's sshd uses this one
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return config["cluster_name"]


@pytest.fixture
def site():
    """A folder for the test's machines and the launcher's home; both stopped and removed after."""
    ensure_tools()
    if os.geteuid() != 0:
        cannot_run("needs root: sshd in its own PID, mount and network namespaces (unshare, ip netns)")
    base = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # short: Ray's unix sockets live under it
    made: list = []
    # `ray up` and the head's autoscaler keep SSH control sockets and a config cache in /tmp.
    ray_leftovers = ("/tmp/ray_ssh_*", "/tmp/ray-config-*")
    before = {p for pattern in ray_leftovers for p in glob.glob(pattern)}
    yield base, made
    for thing in reversed(made):
        thing.stop() if isinstance(thing, SshNode) else thing.delete()
    shutil.rmtree(base, ignore_errors=True)
    for path in {p for pattern in ray_leftovers for p in glob.glob(pattern)} - before:  # this test's only
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


class LaunchedCluster:
    """`ray ...` commands against the test's cluster file, from the launcher's home."""

    def __init__(self, tmp_path, launcher: Launcher, head: SshNode, workers: list[SshNode]) -> None:
        self.config = str(tmp_path / "cluster.yaml")
        self.name = cluster_file(self.config, launcher, head, workers)
        self.nodes = [head, *workers]
        self.env = {**os.environ, "HOME": launcher.home, "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_AUTH_TOKEN", None)

    def ray(self, *args: str, timeout: float = 300) -> str:
        cli = os.path.join(os.path.dirname(sys.executable), "ray")
        proc = run([cli, *args], timeout=timeout, env=self.env, cwd=ROOT)
        return proc.stdout + proc.stderr

    def exec(self, command: str, timeout: float = 300) -> str:
        return self.ray("exec", "--no-config-cache", self.config, command, timeout=timeout)

    def down(self, launcher: Launcher, wait_s: float = 30) -> dict[int, str]:
        """`ray down -y`, then `ray stop` on each worker over SSH (README: `ray down` stops Ray on
        the head only); returns what is left in the nodes' namespaces after up to `wait_s`."""
        started = time.time()
        self.ray("down", "-y", self.config)
        for worker in self.nodes[1:]:  # README's loop; Ray's own way into the node's environment
            ssh = ["ssh", "-i", launcher.key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
            if worker.port != 22:
                ssh += ["-p", str(worker.port)]
            run([*ssh, f"root@{worker.address}", "bash --login -c -i 'source ~/.bashrc; ray stop'"])
        deadline = time.time() + wait_s
        while (left := {p: c for n in self.nodes for p, c in n.leftover().items()}) and time.time() < deadline:
            time.sleep(0.5)
        print(f"[launcher] ray down: {len(left)} processes left after {time.time() - started:.1f} s")
        forget_cluster(self.name)
        return left


def up_and_study(cluster: LaunchedCluster, launcher: Launcher, tmp_path, seeds: int, nodes: int, storage: str) -> dict:
    """`ray up`, wait for `nodes` Ray nodes, send a study with `ray exec`, fetch its results."""
    started = time.time()
    up = cluster.ray("up", "-y", "--no-config-cache", cluster.config, timeout=600)
    print(f"[launcher] ray up took {time.time() - started:.1f} s")
    assert "study ok" in up, up[-3000:]  # setup_commands ran, the copied checkout imports
    head = cluster.nodes[0]
    where = cluster.exec("python3 -c 'import study; print(study.__file__)'")
    assert "/cifar-study/study/__init__.py" in where  # installed from the copy in the node's home
    assert os.path.exists(os.path.join(head.home, "cifar-study", "study", "__init__.py"))
    with open(os.path.join(head.home, ".ray", "auth_token")) as f:
        assert f.read().strip() == launcher.token  # file_mounts copied the cluster's token
    with (
        open(os.path.join(head.home, ".config", "cifar-study", "secret"), "rb") as f,
        open(launcher.secret, "rb") as own,
    ):
        assert f.read() == own.read()  # ... and the signing key, with which trials sign checkpoints
    count = 'RAY_AUTH_MODE=token python3 -c \'import ray; ray.init(address="auto", logging_level="ERROR"); print("nodes", len([n for n in ray.nodes() if n["Alive"]]))\''
    deadline = time.time() + 240
    while f"nodes {nodes}" not in (out := cluster.exec(count)):
        assert time.time() < deadline, f"{nodes} nodes never joined: {out[-2000:]}"
        time.sleep(5)
    print(f"[launcher] {nodes} node(s) up after {time.time() - started:.1f} s")
    cluster.ray(
        "rsync-up",
        cluster.config,
        str(write(tmp_path / "study.yaml", STUDY.format(seeds_list=list(range(seeds))))),
        "~/study.yaml",
    )
    out = cluster.exec(
        "cd ~/cifar-study && RAY_AUTH_MODE=token study run ~/study.yaml --address auto"
        f" --storage-path {storage} --gpus-per-trial 0.5"
    )
    assert "1 CPU + 0.5 GPU each" in out, out[-3000:]  # the nodes' declared GPUs reached Ray
    cluster.ray("rsync-down", cluster.config, f"{storage}/", str(tmp_path / "fetched"))
    runs = os.listdir(tmp_path / "fetched")
    assert len(runs) == 1 and runs[0].startswith("launched"), runs
    assert os.path.exists(tmp_path / "fetched" / runs[0] / "analysis")  # the study's tables
    trials = experiment_rows(str(tmp_path / "fetched" / runs[0]))
    assert len(trials) == seeds and all(rows[-1]["epoch"] == 2 for rows in trials.values()), trials
    return trials


def test_ray_up_runs_a_study_and_ray_down_leaves_nothing(site, tmp_path):
    """The head alone, at 127.0.0.1."""
    assert not port_in_use(6379), "port 6379 (the head's Ray port in cluster-onprem.yaml) is taken on this machine"
    base, made = site
    launcher = Launcher(base)
    made.append(head := SshNode(base, "head", "127.0.0.1", free_port(), launcher))
    cluster = LaunchedCluster(tmp_path, launcher, head, [])
    try:
        up_and_study(cluster, launcher, tmp_path, seeds=2, nodes=1, storage="~/results")
    finally:
        leftover = cluster.down(launcher)
    assert not leftover, f"processes left after ray down: {leftover}"


def test_ray_up_starts_a_worker_over_ssh_and_trials_run_on_both(site, tmp_path):
    """A head and a worker: the worker in a network namespace of its own, so that it has its own
    address (Ray's ports do not collide) and the head's autoscaler reaches it over SSH."""
    assert not port_in_use(6379), "port 6379 (the head's Ray port in cluster-onprem.yaml) is taken on this machine"
    base, made = site
    launcher = Launcher(base)
    made.append(net := Namespace())
    # The head at this machine's own address, the one Ray finds for itself (a head_ip that differs
    # from it leaves the autoscaler matching no Ray node to it); the worker's sshd on port 22 of
    # its namespace: the head's autoscaler logs in with Ray's bootstrap config, which keeps no
    # ssh_proxy_command (found here: ssh to port 22, refused).
    made.append(head := SshNode(base, "head", own_address(), free_port(own_address()), launcher))
    made.append(worker := SshNode(base, "worker", net.address, 22, launcher, netns=net.name))
    cluster = LaunchedCluster(tmp_path, launcher, head, [worker])
    try:
        shared = os.path.join(base, "shared")  # both nodes see it at this path, as with NFS
        os.makedirs(shared)
        trials = up_and_study(cluster, launcher, tmp_path, seeds=4, nodes=2, storage=shared)
        assert len({rows[-1]["node_id"] for rows in trials.values()}) == 2  # trials on both nodes
        assert os.path.isdir(os.path.join(worker.home, "cifar-study", "study"))  # the worker's own copy
    finally:
        # `ray down` runs `ray stop` on the head only (Ray's teardown_cluster; the local provider's
        # terminate_node just forgets the address). Found here: 160 s later the worker's raylet
        # had exited (it lost the head's GCS) but its log_monitor.py still ran. So README has
        # `ray stop` run on each worker after `ray down`, as done here.
        leftover = cluster.down(launcher)
    assert not leftover, f"processes left after ray down: {leftover}"


def forget_cluster(name: str) -> None:
    """Remove what the launcher keeps on this machine about the test's cluster, and only that:
    the local provider's state, the cached config and the SSH control sockets."""
    for suffix in ("state", "lock"):
        # The local provider keeps them in Ray's temp folder: RAY_TMPDIR (conftest sets it) or /tmp.
        path = os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", f"cluster-{name}.{suffix}")
        if os.path.exists(path):
            os.remove(path)
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "ray-config-*")):
        try:
            with open(path) as f:
                if f'"cluster_name": "{name}"' in f.read():
                    os.remove(path)
        except OSError:
            continue
    user, cluster = (hashlib.sha256(s.encode()).hexdigest()[:10] for s in (getpass.getuser(), name))
    shutil.rmtree(f"/tmp/ray_ssh_{user}/{cluster}", ignore_errors=True)
    try:
        os.rmdir(f"/tmp/ray_ssh_{user}")  # only when no other cluster's sockets are in it
    except OSError:
        pass


def write(path, text: str):
    path.write_text(text)
    return path
