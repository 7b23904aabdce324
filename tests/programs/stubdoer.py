#!/usr/bin/env python3
"""A stand-in doer for the program-capability tests: whatever it is asked to be.

It is run as the "interpreter" (``[epicprod] python``) or as the program itself.  It
appends what it received -- argv, working directory, a few variables, standard input --
as one JSON line to ``calls.jsonl`` in its working directory, then does what
``plan.json`` there says for the first plan key found in its argv (a script path such
as ``scripts/pcs-catalog-import.py``, a management command, a module), else for
``"*"``: ``stdout`` and ``stderr`` (text), ``exit`` (status), ``sleep`` (seconds, for a
doer that hangs), ``grandchild`` (start a grandchild that sleeps, writing its pid to
``grandchild.pid``, and never reap it), ``signal`` (kill itself with it).
"""

import json
import os
import signal
import subprocess
import sys
import time

here = os.getcwd()
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
call = {
    "argv": sys.argv[1:],
    "cwd": here,
    "env": {
        k: os.environ[k]
        for k in (
            "DJANGO_SETTINGS_MODULE",
            "SECRET_NOT_ALLOWED",
            "EPICPROD_CAMPAIGN_PROGRESS_MIN_INTERVAL",
        )
        if k in os.environ
    },
    "stdin": stdin,
}
with open(os.path.join(here, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps(call) + "\n")
try:
    with open(os.path.join(here, "plan.json")) as fh:
        plans = json.load(fh)
except FileNotFoundError:
    plans = {}
plan = next((plans[a] for a in sys.argv[1:] if a in plans), plans.get("*", {}))
if plan.get("grandchild"):
    kid = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(os.path.join(here, "grandchild.pid"), "w") as fh:
        fh.write(str(kid.pid))
sys.stdout.write(plan.get("stdout", ""))
sys.stdout.flush()
sys.stderr.write(plan.get("stderr", ""))
sys.stderr.flush()
if plan.get("sleep"):
    time.sleep(float(plan["sleep"]))
if plan.get("signal"):
    os.kill(os.getpid(), getattr(signal, plan["signal"]))
sys.exit(int(plan.get("exit", 0)))
