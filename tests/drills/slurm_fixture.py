"""A private single-node Slurm (slurmctld + slurmd + munged) for tests: `start` / `stop`.

Everything lives under one directory: slurm.conf, the munge key, pid files, logs, spool and
state; nothing in /etc, /run or /var is read or written. Clients (srun, sbatch, scontrol,
squeue, scancel) find this cluster through ``handle.env`` (``SLURM_CONF``); the munge socket
is named in slurm.conf (``AuthInfo=socket=...``). The daemons run in the foreground
(``munged -F``, ``slurmctld -D``, ``slurmd -D``) as children of the test process, each in
its own session, and are stopped by pid; ports are picked free, so two clusters on one
machine do not collide. Start-up takes about half a second.

Needs root (slurmd runs job steps as the submitting user) and Debian's packages
``slurmctld slurmd slurm-client munge`` (.ci/run installs them). `unavailable` says why a
machine cannot run it, for ``pytest.skip``.

    handle = start("/tmp/x")
    subprocess.run(["srun", "-n", "2", "hostname"], env=handle.env, check=True)
    stop(handle)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BINARIES = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "scontrol", "squeue",
            "scancel", "sinfo")
# What the node declares (SlurmdParameters=config_overrides lets it claim more than the
# machine has): enough CPUs and memory for the default --emit slurm resources of a 5-task
# job on one node (5 x 4 CPUs, 5 x 4 GiB) plus an evaluator.
NODE_CPUS = 32
NODE_MEMORY_MB = 64000
# Seconds between SIGTERM and SIGKILL at a time limit or scancel (Slurm's default is 30).
KILL_WAIT_S = 5
_ACTIVE = {"RUNNING", "COMPLETING", "PENDING", "CONFIGURING", "SUSPENDED"}


@dataclasses.dataclass
class Handle:
    dir: str
    conf: str
    env: dict  # os.environ + SLURM_CONF, without the variables of any enclosing job
    node: str
    procs: dict  # daemon name -> subprocess.Popen, in start order
    munge_socket: str


def unavailable() -> str | None:
    """Why this machine cannot start a private Slurm, or None when it can."""
    if os.geteuid() != 0:
        return "a private Slurm needs root (slurmd starts job steps as their user)"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (f"Slurm/munge not installed ({', '.join(missing)} missing): apt-get install "
                f"slurmctld slurmd slurm-client munge (.ci/run does)")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def slurm_conf(d: str, node: str, munge_socket: str, cpus: int = NODE_CPUS,
               memory_mb: int = NODE_MEMORY_MB) -> str:
    return f"""\
# Private single-node Slurm for tests (tests/drills/slurm_fixture.py)
ClusterName=tfpstest
SlurmctldHost={node}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs' states without accounting: one line per job.
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.txt
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
StateSaveLocation={d}/spool/ctld
SlurmdSpoolDir={d}/spool/d
ReturnToService=2
MinJobAge=3600
KillWait={KILL_WAIT_S}
InactiveLimit=0
MailProg=/bin/true
SchedulerParameters=sched_interval=1
NodeName={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES OverSubscribe=FORCE:{cpus} MaxTime=60 State=UP
"""


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-3000:]
    except OSError:
        return ""


def _wait(what: str, ready, timeout: float, proc, log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{_tail(log)}")


def start(d: str, timeout: float = 60, cpus: int = NODE_CPUS,
          memory_mb: int = NODE_MEMORY_MB) -> Handle:
    """Starts munged, slurmctld and slurmd under directory `d`; returns once the node is idle.

    The node declares `cpus` CPUs and `memory_mb` MB (``SlurmdParameters=config_overrides``:
    more than the machine has is fine, the tasks share its cores).
    """
    d = os.path.abspath(d)
    node = socket.gethostname().split(".")[0]
    # munged wants every directory above its socket world-searchable, and a unix socket path
    # has at most 108 bytes: pytest's tmp_path is neither, so a short directory in /tmp.
    sockdir = tempfile.mkdtemp(prefix="tfps-munge-", dir="/tmp")
    os.chmod(sockdir, 0o755)
    sock = os.path.join(sockdir, "munge.socket.2")
    # munged refuses a key readable by others.
    for sub, mode in (("", 0o755), ("etc", 0o755), ("munge", 0o700), ("run", 0o755),
                      ("log", 0o755), ("spool", 0o755), ("spool/ctld", 0o700),
                      ("spool/d", 0o755)):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(os.path.join(d, sub), mode)
    key = os.path.join(d, "munge", "munge.key")
    if not os.path.exists(key):
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
    conf = os.path.join(d, "etc", "slurm.conf")
    with open(conf, "w") as f:
        f.write(slurm_conf(d, node, sock, cpus, memory_mb))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env["SLURM_CONF"] = conf
    handle = Handle(dir=d, conf=conf, env=env, node=node, procs={}, munge_socket=sock)

    def spawn(name: str, argv: list[str]) -> subprocess.Popen:
        with open(os.path.join(d, "log", f"{name}.stdout"), "ab") as out:
            handle.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)
        return handle.procs[name]

    def run(*argv: str) -> str:
        return subprocess.run(argv, env=env, capture_output=True, text=True).stdout

    try:
        p = spawn("munged", ["munged", "-F", f"--socket={sock}", f"--key-file={key}",
                             f"--pid-file={d}/run/munged.pid", f"--log-file={d}/log/munged.log",
                             f"--seed-file={d}/munge/munged.seed"])
        _wait("munged", lambda: os.path.exists(sock), timeout, p, f"{d}/log/munged.log")
        p = spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", conf])  # -i: no saved state
        _wait("slurmctld", lambda: "UP" in run("scontrol", "ping"), timeout, p,
              f"{d}/log/slurmctld.log")
        p = spawn("slurmd", ["slurmd", "-D", "-f", conf, "-N", node])
        _wait("slurmd", lambda: run("sinfo", "-h", "-n", node, "-o", "%t").strip() == "idle",
              timeout, p, f"{d}/log/slurmd.log")
    except BaseException:
        stop(handle)
        raise
    return handle


def job_state(handle: Handle, job_id: str) -> dict:
    """``scontrol show job``'s fields of `job_id` (``JobState``, ``ExitCode``, ...)."""
    out = subprocess.run(["scontrol", "show", "job", job_id], env=handle.env,
                         capture_output=True, text=True).stdout
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def job_pids(handle: Handle) -> list[int]:
    """Live processes of this cluster's jobs (slurmstepd and the tasks: slurmd hands every one
    SLURM_CONF=<this conf>). The daemons, their helpers (slurmctld's slurmscriptd) and this
    test process are not jobs."""
    tag = b"SLURM_CONF=" + handle.conf.encode()
    daemons = {p.pid for p in handle.procs.values()}
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        if pid in daemons or pid == os.getpid() or _parent(pid) in daemons:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if tag in f.read().split(b"\0") and _alive(pid):
                    found.append(pid)
        except OSError:
            continue
    return found


def stop(handle: Handle, timeout: float = 30) -> list[str]:
    """Cancels every job, then stops slurmd, slurmctld and munged by pid (SIGTERM, then
    SIGKILL). Returns what did not stop cleanly (empty when all did)."""
    problems = []
    ctld = handle.procs.get("slurmctld")
    if ctld is not None and ctld.poll() is None:
        subprocess.run(["scancel", "--full", f"--user={os.getuid()}"], env=handle.env,
                       capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T"], env=handle.env,
                                 capture_output=True, text=True)
            if out.returncode or not _ACTIVE & set(out.stdout.split()):
                break
            time.sleep(0.2)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = handle.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            problems.append(f"{name} (pid {proc.pid}) ignored SIGTERM for {timeout}s")
            proc.kill()
            proc.wait()
    for pid in job_pids(handle):
        problems.append(f"job process {pid} still running: SIGKILL")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(os.path.dirname(handle.munge_socket), ignore_errors=True)
    return problems
