"""Run a test worker script in 2 processes under msrun and return what each rank wrote."""

import glob
import json
import os
import subprocess

from train.launch import free_port, msrun_command, msrun_env


def run_workers(script, args, out_dir, workers=2, timeout=600):
    """Run ``script`` under msrun; fail with the workers' logs if it does not exit cleanly."""
    log_dir = os.path.join(out_dir, "msrun_logs")
    cmd = msrun_command(script, [str(a) for a in args], workers, free_port(), log_dir)
    proc = subprocess.run(cmd, env=msrun_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = "".join(open(p, errors="replace").read()[-3000:] for p in sorted(glob.glob(f"{log_dir}/worker_*.log")))
        raise AssertionError(f"msrun exited with {proc.returncode}\n{proc.stdout[-2000:]}\n{logs}")
    return proc


def rank_results(out_dir, prefix, workers=2):
    return [json.load(open(os.path.join(out_dir, f"{prefix}_rank{r}.json"))) for r in range(workers)]
