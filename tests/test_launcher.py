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
- The node's home (`~`) is a folder of the test (sshd's SetEnv HOME); its ~/.bashrc puts the
  node's Python first on PATH, as a lab's node would. The node's Python is a venv of the test
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

from tests.processes import alive, children_of, experiment_rows

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGES = ["openssh-server", "rsync", "netcat-openbsd"]
TOOLS = ["/usr/sbin/sshd", "rsync", "nc", "ssh", "ssh-keygen", "unshare"]

STUDY = """
name: launched
dataset: synthetic
scheduler: {type: fifo}
space:
  seed: {grid: [0, 1]}
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return (
            s.connect_ex(("127.0.0.1", port)) == 0
            or s.connect_ex((socket.gethostbyname(socket.gethostname()), port)) == 0
        )


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


class LoopbackNode:
    """A machine to `ray up`: sshd in its own PID and mount namespaces, on a loopback port."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.home = os.path.join(base, "node-home")  # the node's ~
        self.launcher_home = os.path.join(base, "launcher-home")  # HOME of `ray up`
        self.key = os.path.join(self.launcher_home, ".ssh", "id_ed25519")
        self.port = free_port()
        for folder in (self.home, os.path.dirname(self.key), os.path.join(base, "ray-tmp")):
            os.makedirs(folder, mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(base, "host_key")])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key])
        shutil.copy(self.key + ".pub", os.path.join(base, "authorized_keys"))
        self.make_python()
        with open(os.path.join(self.home, ".bashrc"), "w") as f:
            # What a lab's node has in ~/.bashrc: its Python environment first on PATH, and here
            # one logical GPU declared for the start commands (this machine has none).
            f.write(f"export PATH={self.venv}/bin:$PATH\nexport STUDY_NODE_GPUS=1\n")
        config = os.path.join(base, "sshd_config")
        with open(config, "w") as f:
            f.write(
                f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {base}/host_key\n"
                f"PidFile {base}/sshd.pid\nAuthorizedKeysFile {base}/authorized_keys\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                f"SetEnv HOME={self.home}\n"
            )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder
        os.makedirs("/tmp/ray", exist_ok=True)
        inside = f"mount --bind {base}/ray-tmp /tmp/ray && exec /usr/sbin/sshd -D -e -f {config}"
        self.log = open(os.path.join(base, "sshd.log"), "w")
        self.unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", inside],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while not (self.namespace and self.listening()):
            assert self.unshare.poll() is None and time.time() < deadline, self.sshd_log()
            time.sleep(0.2)

    def make_python(self) -> None:
        """The node's Python: a venv that sees this interpreter's packages (torch, ray, pip)."""
        self.venv = os.path.join(self.base, "node-venv")
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
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def sshd_log(self) -> str:
        with open(os.path.join(self.base, "sshd.log")) as f:
            return f.read()[-3000:]

    def stop(self) -> None:
        """Kill the namespace's first process: the kernel then ends every process in it."""
        for pid in children_of(self.unshare.pid):
            if pid_namespace(pid) == self.namespace:
                os.kill(pid, signal.SIGKILL)
                break
        self.unshare.wait(timeout=30)
        self.log.close()


def run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{cmd[:3]} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def cluster_file(node: LoopbackNode, path: str) -> str:
    """cluster-onprem.yaml with this machine's site-specific values filled in."""
    with open(os.path.join(ROOT, "cluster-onprem.yaml")) as f:
        config = yaml.safe_load(f)
    config["cluster_name"] = f"study-test-{secrets.token_hex(4)}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {
        "ssh_user": "root" if os.geteuid() == 0 else os.environ.get("USER", "root"),
        "ssh_private_key": node.key,
        "ssh_proxy_command": f"nc %h {node.port}",  # Ray's auth has no port key
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return config["cluster_name"]


@pytest.fixture
def node():
    ensure_tools()
    if os.geteuid() != 0:
        cannot_run("needs root: sshd in its own PID and mount namespaces (unshare)")
    base = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # short: Ray's unix sockets live under it
    node = LoopbackNode(base)
    yield node
    node.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_ray_up_runs_a_study_and_ray_down_leaves_nothing(node, tmp_path):
    assert not port_in_use(6379), "port 6379 (the head's Ray port in cluster-onprem.yaml) is taken on this machine"
    config = str(tmp_path / "cluster.yaml")
    name = cluster_file(node, config)
    token = secrets.token_hex(32)
    os.makedirs(os.path.join(node.launcher_home, ".ray"))
    with open(os.path.join(node.launcher_home, ".ray", "auth_token"), "w") as f:
        f.write(token)
    env = {**os.environ, "HOME": node.launcher_home, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")

    def launcher(*args: str, timeout: float = 300) -> str:
        proc = run([ray_cli, *args], timeout=timeout, env=env, cwd=ROOT)
        return proc.stdout + proc.stderr

    try:
        started = time.time()
        up = launcher("up", "-y", "--no-config-cache", config, timeout=600)
        up_s = time.time() - started
        print(f"[launcher] ray up took {up_s:.1f} s")
        assert "study ok" in up, up[-3000:]  # setup_commands ran, the copied checkout imports
        # The copied checkout, installed into the node's Python by setup_commands.
        where = launcher("exec", config, "python3 -c 'import study; print(study.__file__)'")
        assert os.path.join(node.home, "cifar-study", "study") in where
        with open(os.path.join(node.home, ".ray", "auth_token")) as f:
            assert f.read().strip() == token  # file_mounts copied the cluster's token
        launcher("rsync-up", config, str(write(tmp_path / "study.yaml", STUDY)), "~/study.yaml")
        study = launcher(
            "exec",
            "--no-config-cache",
            config,
            "cd ~/cifar-study && RAY_AUTH_MODE=token study run ~/study.yaml --address auto"
            " --storage-path ~/results --gpus-per-trial 0.5",
        )
        assert "1 CPU + 0.5 GPU each" in study, study[-3000:]  # the node's declared GPU reached Ray
        launcher("rsync-down", config, "~/results/", str(tmp_path / "fetched"))
        runs = os.listdir(tmp_path / "fetched")
        assert len(runs) == 1 and runs[0].startswith("launched"), runs
        trials = experiment_rows(str(tmp_path / "fetched" / runs[0]))
        assert len(trials) == 2 and all(rows[-1]["epoch"] == 2 for rows in trials.values()), trials
        assert os.path.exists(tmp_path / "fetched" / runs[0] / "analysis")  # the study's tables
    finally:
        launcher("down", "-y", config, timeout=300)
        leftover = {}
        deadline = time.time() + 30
        while time.time() < deadline:
            leftover = {p: c for p, c in namespace_processes(node.namespace).items() if "sshd" not in c}
            if not leftover:
                break
            time.sleep(0.5)
        forget_cluster(name)
    assert not leftover, f"processes left after ray down: {leftover}"


def forget_cluster(name: str) -> None:
    """Remove what the launcher keeps on this machine about the test's cluster, and only that:
    the local provider's state, the cached config and the SSH control sockets."""
    for suffix in ("state", "lock"):
        path = f"/tmp/ray/cluster-{name}.{suffix}"
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
