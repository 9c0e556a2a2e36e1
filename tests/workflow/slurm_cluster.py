"""A single-node SLURM cluster for tests: Debian's slurm-wlm and munge, configured in a temporary
folder and started here (munged, slurmctld, slurmd), stopped by :meth:`Cluster.stop`.

:func:`start` raises :class:`Unavailable` with the reason when this machine cannot run one (not
root, binaries missing, a SLURM configuration of its own, a daemon that does not come up).

The jobs' ``srun`` (snakemake-executor-plugin-slurm-jobstep runs each job through it) finds the
configuration at SLURM's default path only: the jobstep plugin removes every ``SLURM_*`` variable,
``SLURM_CONF`` included, from the step's environment. So the cluster's ``slurm.conf`` is linked at
``/etc/slurm/slurm.conf`` while it runs, and only on a machine that has no file there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PREFIX = "bd-slurm-"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "srun", "munge", "unmunge")
PARTITION = "debug"


class Unavailable(RuntimeError):
    """SLURM cannot run on this machine; the message says why."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise Unavailable("cannot read MemTotal from /proc/meminfo")


def _stale_link() -> bool:
    """/etc/slurm/slurm.conf left behind by an earlier run of this module (its target is gone)."""
    return SYSTEM_CONF.is_symlink() and PREFIX in os.readlink(SYSTEM_CONF) and not SYSTEM_CONF.exists()


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.socket = root / "munge/munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.bins = {n: _which(n) for n in DAEMONS + CLIENTS}
        self.linked = False

    # -------------------------------------------------------------------------------- setup
    def _write_conf(self) -> None:
        cpus = os.cpu_count() or 1
        mem = int(_mem_total_mb() * 0.9)  # below what slurmd measures, or it drains the node
        r = self.root
        self.conf.write_text(f"""\
ClusterName=braindecode-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to squeue (the executor's status command here) and scontrol
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")

    def _run(self, *cmd, check=True, timeout=30, input=None) -> subprocess.CompletedProcess:
        r = subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            raise Unavailable(f"`{' '.join(map(str, cmd))}` failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
        return r

    def _log_tail(self, name: str, n: int = 8) -> str:
        f = self.root / "log" / name
        return " | ".join(f.read_text().splitlines()[-n:]) if f.is_file() else f"(no {name})"

    def start(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            (r / d).mkdir(mode=0o755)
        key = r / "munge/munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._run(self.bins["munged"], f"--socket={self.socket}", f"--key-file={key}", f"--pid-file={r}/munge/munged.pid",
                  f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed")
        cred = self._run(self.bins["munge"], "-n", "-S", self.socket).stdout
        self._run(self.bins["unmunge"], "-S", self.socket, input=cred)
        self._write_conf()
        SYSTEM_CONF.parent.mkdir(exist_ok=True)
        if _stale_link():
            SYSTEM_CONF.unlink()
        SYSTEM_CONF.symlink_to(self.conf)
        self.linked = True
        self._run(self.bins["slurmctld"], "-c", "-f", self.conf)
        self._run(self.bins["slurmd"], "-f", self.conf)
        state, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self._run(self.bins["sinfo"], "-h", "-N", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(1)
        raise Unavailable(f"the node did not become idle in 60 s (sinfo: {state!r}); slurmctld: "
                          f"{self._log_tail('slurmctld.log')}; slurmd: {self._log_tail('slurmd.log')}")

    # ------------------------------------------------------------------------------ queries
    def jobs(self) -> list[dict]:
        """Every job slurmctld remembers (MinJobAge keeps finished ones): id, name, state, comment,
        partition, cpus, memory, time limit."""
        fields = ("id", "name", "state", "comment", "partition", "cpus", "memory", "time_limit")
        out = self._run(self.bins["squeue"], "--states=all", "-h", "-o", "%i|%j|%T|%k|%P|%C|%m|%l").stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]

    # ----------------------------------------------------------------------------- teardown
    def stop(self) -> None:
        """Cancel the cluster's jobs, wait (up to 60 s) until none runs, stop the daemons."""
        scancel, squeue = _which("scancel"), self.bins.get("squeue")
        if scancel and squeue and (self.root / "slurmctld.pid").is_file():
            subprocess.run([scancel, "--quiet", "-u", "root"], env=self.env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                r = subprocess.run([squeue, "-h", "-t", "RUNNING,COMPLETING,PENDING,CONFIGURING", "-o", "%i"],
                                   env=self.env, capture_output=True, text=True, timeout=30)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(1)
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            p = self.root / pidfile
            if not p.is_file():
                continue
            try:
                pid = int(p.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (ValueError, IndexError, ProcessLookupError):
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
        if self.linked and SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.unlink()
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Cluster:
    """A running single-node cluster, or :class:`Unavailable` saying why there cannot be one."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise Unavailable("slurmd must run as root to start jobs; these tests are not running as root")
    missing = [n for n in DAEMONS + CLIENTS if _which(n) is None]
    if missing:
        raise Unavailable(f"not installed: {', '.join(missing)} (Debian: apt-get install slurm-wlm munge; .ci/run does)")
    if (SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink()) and not _stale_link():
        raise Unavailable(f"{SYSTEM_CONF} exists: this machine has a SLURM configuration of its own, which the "
                          "test's cluster would have to replace")
    cluster = Cluster(Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp")))  # short: a socket path is <= 107 bytes
    cluster.root.chmod(0o755)
    try:
        cluster.start()
    except (Unavailable, OSError, subprocess.TimeoutExpired) as e:
        cluster.stop()
        raise Unavailable(f"SLURM did not start: {e}") from None
    return cluster
