"""Launching worker processes: a free port for msrun's scheduler, and the msrun command line."""

import os
import shutil
import socket
import sys


def free_port():
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError:
            return True
    return False


def msrun_command(script, args, workers, port, log_dir, timeout=60):
    """``msrun`` running ``python script args`` in ``workers`` local processes. msrun starts the ``python`` on
    PATH, so the running interpreter's folder goes first in the workers' PATH (see ``msrun_env``)."""
    msrun = shutil.which("msrun", path=msrun_env()["PATH"]) or "msrun"
    return [msrun, f"--worker_num={workers}", f"--local_worker_num={workers}", "--master_addr=127.0.0.1",
            f"--master_port={port}", "--join=True", f"--log_dir={log_dir}", f"--cluster_time_out={timeout}",
            script, *args]


def msrun_env(env=None):
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env
