"""Kill soak: a real search killed with SIGKILL at many moments, then let finish; nothing lost, mixed or hung.

A small real search (`autopeft search`, the default sampler, a few dozen examples per trial) on a
fresh BoTorch kernel folder is started, killed (SIGKILL to its process group, so a kernel compile
dies too) and started again, `--kills` times, then run to the end. Kill moments:

1. 0.3 s after the launch: before the first trial;
2. while the first BO proposal compiles BoTorch's kernel (its compile process is seen);
3. as soon as the next launch has built the kernel (its .so appears): during that proposal;
4. then at uniformly random moments within a restart's first `--window` seconds;
5. last, while the report is being written (its temporary files are seen in the folder).

Then it asserts: SQLite's integrity_check is ok; exactly `--budget` trials are evaluated
(COMPLETE, not duplicates); no configuration is trained twice with the same seed (replicates
have other seeds); every restart that was not killed first started a trial (or ended) within
`--hang-after` seconds. It reports, per restart, the seconds from its launch to its first
trial's start.

Usage:
    python benchmarks/kill_soak.py --kills 20 --budget 12 --out /tmp/soak
    python benchmarks/kill_soak.py --kills 4 --budget 6 --out /tmp/soak-smoke   # a smoke-sized version
Writes OUT/soak.json and prints a summary; exits 1 if an assertion fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SEARCH = ["--task", "RTE", "--train-examples", "48", "--dev-examples", "48", "--epochs", "1", "--max-length", "64",
          "--init", "3", "--quiet"]


def _trial_starts(db: Path) -> list[float]:
    """Start times (epoch seconds) of the study's trials, from the SQLite file."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("select datetime_start from trials where datetime_start is not null").fetchall()
    except sqlite3.Error:
        return []
    from datetime import datetime

    return [datetime.fromisoformat(r[0]).timestamp() for r in rows]


def _compiling(pid: int) -> bool:
    """Whether a process in `pid`'s group is compiling BoTorch's kernel."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pid:
                continue
            cmd = (proc / "cmdline").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if b"_try_load_fused_kernel" in cmd or b"cc1plus" in cmd or b"ninja" in cmd:
            return True
    return False


def _writing_report(out: Path) -> bool:
    return any(p.name.startswith(".") and p.name.endswith((".csv", ".json", ".png")) for p in out.iterdir())


def restart(argv: list[str], env: dict, out: Path, moment: str, window: float, hang_after: float,
            rng: random.Random) -> dict:
    """One launch, killed at `moment` ("none": let it run to the end); what it did."""
    db = out / "study.db"
    before = set(_trial_starts(db))
    launched = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = launched + (0.3 if moment == "start" else rng.uniform(0.5, window) if moment == "random" else 3600)
    killed = False
    while proc.poll() is None:
        now = time.time()
        due = now >= deadline
        if moment == "compile":
            due = due or _compiling(proc.pid)
        elif moment == "built":
            due = due or any(Path(env["TORCH_EXTENSIONS_DIR"]).glob("*/logei_fused_ext*.so"))
        elif moment == "report":
            due = due or (out.exists() and _writing_report(out))
        if due and moment != "none":
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        if moment == "none" and now - launched > hang_after and not (set(_trial_starts(db)) - before):
            os.killpg(proc.pid, signal.SIGKILL)  # a hang: nothing started within the bound
            break
        time.sleep(0.01)
    _, err = proc.communicate()
    new_starts = sorted(set(_trial_starts(db)) - before)
    return {"moment": moment, "killed": killed, "returncode": proc.returncode, "seconds": time.time() - launched,
            "first_trial_s": (new_starts[0] - launched) if new_starts else None, "new_trials": len(new_starts),
            "stderr_tail": err[-600:]}


def check(out: Path, budget: int) -> list[str]:
    """The soak's assertions on the finished study; the failures, if any."""
    problems = []
    with sqlite3.connect(out / "study.db") as con:
        if con.execute("pragma integrity_check").fetchone()[0] != "ok":
            problems.append("integrity_check is not ok")
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    if len(done) != budget:
        problems.append(f"{len(done)} evaluated trials, not {budget}")
    work = [(json.dumps(t.user_attrs["config"], sort_keys=True), t.user_attrs.get("replicate_index", 0)) for t in done]
    if len(set(work)) != len(work):
        problems.append("a configuration was trained twice with the same seed")
    if study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING)):
        problems.append("trials left RUNNING or WAITING")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--window", type=float, default=20.0, help="random kills fall in a restart's first WINDOW s")
    parser.add_argument("--hang-after", type=float, default=180.0, help="a restart with no trial started by then hangs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; give a new --out")
    args.out.mkdir(parents=True, exist_ok=True)
    study_dir = args.out / "study"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TORCH_EXTENSIONS_DIR": str(args.out / "torch_extensions")}
    env.pop("AUTOPEFT_TORCH_EXTENSIONS_DIR", None)
    argv = [sys.executable, "-m", "autopeft.cli", "search", "--model", args.model, "--budget", str(args.budget),
            "--out", str(study_dir), *SEARCH]
    randoms = ["random"] * max(0, args.kills - 4)
    moments = (["start", "compile", "built", *randoms, "report"])[: args.kills]
    rng = random.Random(args.seed)
    restarts = []
    for moment in moments:
        restarts.append(restart(argv, env, study_dir, moment, args.window, args.hang_after, rng))
        r = restarts[-1]
        print(f"restart {len(restarts):>2} ({moment:<7}): killed after {r['seconds']:.1f} s, {r['new_trials']} trial(s) "
              f"started, first at {r['first_trial_s'] if r['first_trial_s'] is None else round(r['first_trial_s'], 1)} s",
              flush=True)
    final = restart(argv, env, study_dir, "none", args.window, args.hang_after, rng)
    restarts.append(final)
    problems = check(study_dir, args.budget)
    if final["returncode"] != 0:
        problems.append(f"the final run exited {final['returncode']}: {final['stderr_tail']}")
    hung = [i for i, r in enumerate(restarts, 1) if not r["killed"] and r["new_trials"] == 0 and r["returncode"] != 0]
    if hung:
        problems.append(f"restarts {hung} neither started a trial nor ended within {args.hang_after} s")
    firsts = [r["first_trial_s"] for r in restarts if r["first_trial_s"] is not None]
    summary = {"kills": args.kills, "budget": args.budget, "moments": moments, "restarts": restarts,
               "problems": problems, "first_trial_s": {"min": min(firsts, default=None),
                                                        "median": sorted(firsts)[len(firsts) // 2] if firsts else None,
                                                        "max": max(firsts, default=None)}}
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2))
    print(f"final run: {final['new_trials']} trial(s), rc {final['returncode']}; launch -> first trial: "
          f"{summary['first_trial_s']}")
    print("OK: integrity ok, budget exact, no work done twice, no hang" if not problems else "FAILED: " + "; ".join(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
