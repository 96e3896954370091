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


def _last_value(args, flag, default):
    """The value of the last ``flag`` in ``args`` (later flags override earlier ones, as argparse does)."""
    value = default
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def _failed_rank(log_dir):
    """(rank, last error line) of the first worker log that ends in a Python error, if any."""
    import glob
    import re

    for path in sorted(glob.glob(os.path.join(log_dir, "worker_*.log"))):
        with open(path, errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
        errors = [line for line in lines if re.match(r"^(\w+(Error|Exception|Exit)|error:)", line)]
        if errors:
            return re.search(r"worker_(\d+)", path).group(1), errors[-1], path
    return None


def main(argv=None):
    """``python train/launch.py --npus N [--master_port P] --log_dir D -- TRAIN_ARGS``: train/train.py in N
    processes under msrun (one process: directly)."""
    import argparse
    import subprocess

    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(prog="train/launch.py")
    p.add_argument("--npus", default="8")
    p.add_argument("--master_port", default="")
    p.add_argument("--log_dir", required=True)
    opts = p.parse_args(argv[:split])
    train_args = argv[split + 1:]
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    try:
        npus = int(opts.npus)
        sp = int(_last_value(train_args, "--sequence_parallel_shards", "1"))
    except ValueError:
        print(f"error: NPUS ({opts.npus}) and SP must be whole numbers", file=sys.stderr)
        return 2
    if npus < 1 or sp < 1 or npus % sp:
        print(f"error: NPUS={npus} must be a positive multiple of SP={sp} (each sequence-parallel group takes SP "
              "processes)", file=sys.stderr)
        return 2
    if npus == 1:
        if sp != 1:
            print("error: SP > 1 needs NPUS >= SP processes", file=sys.stderr)
            return 2
        return subprocess.call([sys.executable, script, *train_args])
    port = int(opts.master_port) if opts.master_port else free_port()
    if port_in_use(port):
        print(f"error: MASTER_PORT {port} is in use (another training run?): pick a free one, or leave MASTER_PORT "
              "unset to get one", file=sys.stderr)
        return 2
    os.makedirs(opts.log_dir, exist_ok=True)
    print(f"msrun: {npus} processes, SP {sp}, master port {port}, worker logs in {opts.log_dir}", flush=True)
    code = subprocess.call(msrun_command(script, train_args, npus, port, opts.log_dir), env=msrun_env())
    if code != 0:
        failed = _failed_rank(opts.log_dir)
        where = (f"rank {failed[0]} failed with: {failed[1]} (full log: {failed[2]})" if failed
                 else f"a worker stopped; see {opts.log_dir}/worker_*.log")
        print(f"error: distributed training stopped (exit {code}): {where}. The other ranks were stopped.",
              file=sys.stderr)
        return code or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
