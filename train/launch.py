"""Launching the SFT scripts' processes: the recipe and environment -> train/train.py flags, checks before any
process starts (NPUS/SP, a busy port, a checkpoint of another process layout), msrun, and a clear message
naming the rank that failed."""

import math
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


def _failed_rank(log_dir, exits=()):
    """(rank, what happened, its log) for a failed launch, or None. The failed rank is the first worker msrun saw
    exit with an error code (``exits``: (pid, code) pairs, in order), found by the "rank R of W: process PID" line
    each rank writes to its log (train/parallelize.py); what happened is the last Python error of its log, else the
    signal or code (a process killed by the kernel's out-of-memory killer or a user leaves no error of its own).
    Without such a worker: the first log that ends in a Python error."""
    import glob
    import re
    import signal

    logs = {}  # rank -> (path, rank's Python error lines)
    rank_of = {}  # pid -> rank
    for path in sorted(glob.glob(os.path.join(log_dir, "worker_*.log"))):
        with open(path, errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
        rank = re.search(r"worker_(\d+)", path).group(1)
        logs[rank] = path, [line for line in lines if re.match(r"^(\w+(Error|Exception|Exit)|error:)", line)]
        for line in lines:
            found = re.match(r"^rank (\d+) of \d+: process (\d+)$", line)
            if found:
                rank_of[int(found.group(2))] = found.group(1)
    for pid, code in exits:
        rank = rank_of.get(pid)
        if rank in logs:
            path, errors = logs[rank]
            if errors:
                return rank, errors[-1], path
            if code < 0:
                name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
                return rank, f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else ""), path
            return rank, f"exit code {code}", path
    for rank, (path, errors) in logs.items():
        if errors:
            return rank, errors[-1], path
    return None


RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "recipes")
_PREPARED_BY = {"t2i": "train/prepare_vision_data.py", "vqa": "train/prepare_vqa_data.py (or prepare_text_data.py)",
                "text": "train/prepare_text_data.py"}


def recipe_args(name):
    """The flags of ``configs/recipes/{name}_sft.args`` (comments allowed)."""
    import shlex

    with open(os.path.join(RECIPES, f"{name}_sft.args"), encoding="utf-8") as f:
        return shlex.split(f.read(), comments=True)


def _error(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def _resume_problem(train_args, npus, sp):
    """Before starting processes: a checkpoint this run would resume that was written under another layout."""
    from train.checkpointing import check_same_layout, checkpoints, process_layout

    path = _last_value(train_args, "--resume", None)
    if path is None:
        found = checkpoints(_last_value(train_args, "--output_dir", "."))
        path = found[-1][1] if found else None
    if path is None or not os.path.isfile(os.path.join(path, "trainer_state.json")):
        return None  # nothing to resume, or the trainer explains what is wrong with --resume
    try:
        zero = int(_last_value(train_args, "--ms_zero_stage", "0"))
        check_same_layout(path, process_layout(npus, sp, zero))
    except ValueError as e:
        return str(e)
    return None


def _stop_scheduler(msrun_pid):
    """Stop msrun's scheduler process after a worker failed. msrun kills the other workers within a second, then
    waits for its scheduler, which waits out the dead workers' heartbeats (~30 s) with nothing left to do: the
    error would reach the user that much later. The scheduler runs the training script with MS_ROLE=MS_SCHED."""
    import signal

    try:
        with open(f"/proc/{msrun_pid}/task/{msrun_pid}/children") as f:
            children = [int(pid) for pid in f.read().split()]
    except OSError:
        return  # msrun has exited, or this system has no /proc: msrun's own wait stands
    for pid in children:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if b"MS_ROLE=MS_SCHED" in f.read().split(b"\0"):
                    os.kill(pid, signal.SIGTERM)
        except OSError:
            continue


# Seconds between msrun reporting a failed worker and stopping its scheduler: msrun polls its workers every second
# and kills the others before it waits for the scheduler.
_SCHEDULER_GRACE_S = 3.0


def _run_quietly(command):
    """Run msrun, passing its output through except the scheduler's own INFO/WARNING chatter (it ignores
    GLOG_v); the workers' full logs stay in the log folder. Returns (exit code, [(pid, code) of each worker msrun
    saw fail]). Once a worker has failed, msrun's scheduler is stopped rather than waited for."""
    import re
    import subprocess
    import threading

    chatter = re.compile(r"^\[(INFO|WARNING)\] (DISTRIBUTED|ME|DEVICE|RUNTIME_FRAMEWORK)\(")
    failed = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
    exits = []
    with subprocess.Popen(command, env=msrun_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        stopper = threading.Timer(_SCHEDULER_GRACE_S, _stop_scheduler, [proc.pid])
        stopper.daemon = True
        held, in_msrun_traceback = None, False  # msrun's own traceback, after a worker failed: our message says it
        for line in proc.stdout:
            found = failed.search(line)
            if found:
                exits.append((int(found.group(1)), int(found.group(2))))
                if len(exits) == 1:
                    stopper.start()
            if held is not None:  # a "Traceback" line: msrun's if the next line is in msrun's own files
                in_msrun_traceback = "msrun" in line or "mindspore/parallel/cluster" in line
                if not in_msrun_traceback:
                    sys.stdout.write(held)
                held = None
            elif exits and line.startswith("Traceback (most recent call last)"):
                held = line
                continue
            if in_msrun_traceback:
                in_msrun_traceback = not line.startswith("RuntimeError: Distributed job exited")
                continue
            if not chatter.match(line):
                sys.stdout.write(line)
                sys.stdout.flush()
        if held is not None:  # the output ended on it
            sys.stdout.write(held)
    stopper.cancel()
    return proc.returncode, exits


def main(argv=None):
    """The SFT scripts' common part: ``python train/launch.py --recipe t2i [--single | --npus 8 --sp 8 --zero 3]
    -- [TRAIN_ARGS]``. The environment overrides the defaults (NPUS, SP, ZERO_STAGE, MODEL_PATH, DATA_PATH,
    OUTPUT_DIR, MASTER_PORT); the recipe's flags come first and TRAIN_ARGS after them, so the user's flags win.
    NPUS=1 (or --single) runs train/train.py in this process's interpreter; more go through msrun."""
    import argparse
    import subprocess

    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(prog="train/launch.py", allow_abbrev=False)
    p.add_argument("--recipe", choices=tuple(_PREPARED_BY), required=True)
    p.add_argument("--single", action="store_true", help="one device: no NPUS/SP/ZERO_STAGE")
    p.add_argument("--npus", default="8")
    p.add_argument("--sp", default="1")
    p.add_argument("--zero", default="0")
    opts = p.parse_args(argv[:split])
    user_args = argv[split + 1:]
    env = os.environ
    layout = "single" if opts.single else "seq_parallel"
    output_dir = env.get("OUTPUT_DIR") or f"outputs/{opts.recipe}_sft_{layout}"
    if not env.get("DATA_PATH"):
        return _error(f"set DATA_PATH to a folder written by {_PREPARED_BY[opts.recipe]}")
    train_args = ["--model_name_or_path", env.get("MODEL_PATH") or "BAAI/Emu3-Stage1",
                  "--train_data_path", env["DATA_PATH"], "--output_dir", output_dir]
    npus = "1"
    if not opts.single:
        npus = env.get("NPUS") or opts.npus
        sp = env.get("SP")
        if not sp:  # the recipe's SP, reduced to divide NPUS (NPUS=1: the single-device trainer)
            sp = str(math.gcd(int(opts.sp), int(npus))) if npus.isdigit() and int(npus) > 0 else opts.sp
        train_args += ["--sequence_parallel_shards", sp, "--ms_zero_stage", env.get("ZERO_STAGE") or opts.zero]
    train_args += recipe_args(opts.recipe) + user_args
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    try:
        npus = int(npus)
        sp = int(_last_value(train_args, "--sequence_parallel_shards", "1"))
    except ValueError:
        return _error(f"NPUS ({npus}) and SP must be whole numbers")
    if npus < 1 or sp < 1 or npus % sp:
        return _error(f"NPUS={npus} must be a positive multiple of SP={sp} (each sequence-parallel group takes SP "
                      "processes)")
    problem = _resume_problem(train_args, npus, sp)
    if problem:
        return _error(problem)
    if npus == 1:
        return subprocess.call([sys.executable, script, *train_args])
    # The flags and what they point at are checked here, once, without MindSpore: under msrun each rank would
    # print the same error into its log after loading MindSpore, and the launch would end ~25 s later.
    from train.arguments import parse_args
    from train.preflight import check_run

    try:
        check_run(parse_args(train_args), sp)  # a wrong flag exits with its usage (code 2), as train/train.py would
    except (FileNotFoundError, ValueError) as e:
        hint = " (for the scripts: SP=DIVISOR, with NPUS a multiple of it)" if str(e).startswith(
            "--sequence_parallel_shards") else ""
        return _error(f"{e}{hint}")
    port = int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else free_port()
    if port_in_use(port):
        return _error(f"MASTER_PORT {port} is in use (another training run?): pick a free one, or leave MASTER_PORT "
                      "unset to get one")
    log_dir = os.path.join(output_dir, "parallel_logs")
    os.makedirs(log_dir, exist_ok=True)
    print(f"msrun: {npus} processes, SP {sp}, master port {port}, worker logs in {log_dir}", flush=True)
    code, exits = _run_quietly(msrun_command(script, train_args, npus, port, log_dir))
    if code != 0:
        failed = _failed_rank(log_dir, exits)
        where = (f"rank {failed[0]} failed with: {failed[1]} (full log: {failed[2]})" if failed
                 else f"a worker stopped; see {log_dir}/worker_*.log")
        _error(f"distributed training stopped (exit {code}): {where}. The other ranks were stopped.")
        return code
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
