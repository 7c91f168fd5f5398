"""What ties a sweep's job processes to the process that launched the sweep: when it dies, however it
dies, they die with it.

Left to themselves, a sweep's jobs outlive it: the joblib launcher's workers (loky) finish the job they
have, then wait minutes for more; submitit starts each local job to survive the Python session that
submitted it. Killed outright (SIGKILL, an out-of-memory kill), the launching process can stop none
of them. So each job's process watches it: the launching process names itself in the environment its
jobs inherit (``tie_jobs``), and each job's process, as it sets itself up (``process.prepare``), waits
in a thread for that process to end, then kills itself (``follow``). A job's process is tied from
then on: a launcher killed while its workers are still importing is found gone as each gets there.

Why this way, and not another:

- The launching process is named, not inferred from the process tree: a submitit job's parent is
  submitit's controller, which lives on; and once a parent has died, ``os.getppid()`` names init or a
  subreaper, which nothing tells from a real parent.
- Not ``PR_SET_PDEATHSIG``: it fires when the *thread* that started the process ends, and loky starts
  workers from whichever thread asks for them (nnexp's warm-up thread, loky's manager thread), which end
  long before the launching process.
- A pidfd (``os.pidfd_open``, Linux 5.3) wakes the thread the moment the process ends, with no polling;
  the name holds the process's start time beside its pid, so that a pid reused by another process is
  not taken for the launcher.
- SIGKILL, sent to itself: the job dies as its launcher did, and what a process killed outright leaves
  (its run RUNNING, its last checkpoint whole) is what ``resume=<sweep id>`` takes up. A gentler stop
  could be caught on the way: submitit's jobs ignore SIGTERM, and loky's workers catch whatever a job
  raises and then wait for the next one.

Where there are no pidfds (not Linux), jobs are not tied.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path

VARIABLE = "NNEXP_LAUNCHER"  # "<pid> <start time>" of the process whose jobs die with it


def name(pid: int) -> str | None:
    """``pid`` and its start time (in clock ticks since boot, /proc/PID/stat's 22nd field), or None if
    no process has that pid."""
    try:
        after_command = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return f"{pid} {after_command[19]}"


def tie_jobs(tied: bool) -> None:
    """In a launching process: tie the job processes it starts from now on to itself (``tied``), or to
    nothing: jobs on other machines (SLURM's) outlive it by design."""
    if tied:
        os.environ[VARIABLE] = name(os.getpid())
    else:
        os.environ.pop(VARIABLE, None)


def follow() -> None:
    """In a job's process: die when the process it was tied to ends, or now if it has ended already."""
    launcher = os.environ.get(VARIABLE)
    if launcher is None or not hasattr(os, "pidfd_open"):
        return
    pid = int(launcher.split()[0])
    try:
        ended = os.pidfd_open(pid)
    except ProcessLookupError:
        die()
    if name(pid) != launcher:  # the pid is another process's now
        die()
    threading.Thread(target=die_when_readable, args=(ended,), name="nnexp-tether", daemon=True).start()


def die_when_readable(pidfd: int) -> None:
    """Wait for ``pidfd``'s process to end (its pidfd becomes readable), then die."""
    ending = select.poll()
    ending.register(pidfd, select.POLLIN)
    ending.poll()
    die()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
