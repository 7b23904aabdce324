"""The catalogue's EVGEN spec, checked, and what is made of it: the sandbox files and
PanDA's task parameters (the shape of the production EVGEN recipe: a noInput+noOutput
task whose containerised payload streams its input and registers its own output).

The spec comes from the catalogue and is treated as hostile: every name that becomes a
file name or a variable is checked, every value written into the environment script is
quoted for the shell that sources it on the worker, and a field this capability does
not implement (Event Service, a PanDA input dataset, staged-out files, background
files) is refused by name rather than dropped.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

#: The generic-payload transformation runGen wraps (the production recipe's value).
TRANS_PATH = "https://pandaserver-doma.cern.ch/trf/user/runGen-00-00-02"
#: Replaced by the uploaded sandbox's name by the submitting program.
ARCHIVE_MARK = "__OPSAGENT_SANDBOX_ARCHIVE__"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ENV = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
#: Set by the capability in the environment script; a spec may not.
RESERVED_ENV = frozenset({"X509_USER_PROXY", "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "HOME"})
#: Spec fields of the recipe that this capability does not implement (yet).
UNSUPPORTED = (
    "nEventsPerWorker",
    "fineGrainedProc",
    "inputDataset",
    "storageData",
    "stageOutFiles",
    "trial",
    "residual",
)
MAX_ROWS = 100_000


class SpecRefused(ValueError):
    """The spec cannot be submitted; the message names the field."""


def _text(spec: dict[str, Any], key: str, limit: int = 4096, required: bool = True) -> str:
    value = spec.get(key)
    if value is None or value == "":
        if required:
            raise SpecRefused(f"the EVGEN spec has no {key}")
        return ""
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise SpecRefused(f"the EVGEN spec's {key} is not a printable string of at most {limit}")
    return value


def _int(spec: dict[str, Any], key: str, default: int, low: int = 0, high: int = 10**9) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise SpecRefused(f"the EVGEN spec's {key} is not a number: {str(value)[:40]!r}")
    try:
        number = int(float(value))
    except ValueError:
        raise SpecRefused(f"the EVGEN spec's {key} is not a number: {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise SpecRefused(f"the EVGEN spec's {key} is out of range: {number}")
    return number


def check(spec: Any) -> dict[str, Any]:
    """The spec if it can be submitted, else :class:`SpecRefused` naming what is wrong."""
    if not isinstance(spec, dict):
        raise SpecRefused("the EVGEN spec is not a JSON object")
    for key in UNSUPPORTED:
        if spec.get(key):
            raise SpecRefused(
                f"the EVGEN spec uses {key}, which this capability does not submit; submit "
                f"this task with the old agent's doer"
            )
    if (spec.get("env") or {}).get("BG_FILES"):
        raise SpecRefused("the EVGEN spec needs BG_FILES staged, which this capability does not do")
    for key, pattern in (("outDS", _NAME), ("csvBase", _NAME), ("site", _SITE)):
        if not pattern.fullmatch(_text(spec, key, 255)):
            raise SpecRefused(f"the EVGEN spec's {key} is not a plain name: {spec[key]!r}")
    _text(spec, "exec")
    rows = spec.get("csvRows")
    if not isinstance(rows, list) or not rows or len(rows) > MAX_ROWS:
        raise SpecRefused(f"the EVGEN spec's csvRows is not a list of 1 to {MAX_ROWS} rows")
    for i, row in enumerate(rows):
        if not isinstance(row, str) or len(row) > 4096 or not row.isprintable():
            raise SpecRefused(f"the EVGEN spec's csvRows[{i}] is not one printable line")
    env = spec.get("env") or {}
    if not isinstance(env, dict):
        raise SpecRefused("the EVGEN spec's env is not an object")
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV.fullmatch(name) or name in RESERVED_ENV:
            raise SpecRefused(f"the EVGEN spec's env has a name it may not set: {name!r}")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise SpecRefused(f"the EVGEN spec's env {name} is not a string or number")
        if not str(value).isprintable() or len(str(value)) > 4096:
            raise SpecRefused(f"the EVGEN spec's env {name} is not printable")
    for key in (
        "containerImage",
        "campaign",
        "userName",
        "vo",
        "workingGroup",
        "cloud",
        "prodSourceLabel",
        "processingType",
        "taskType",
    ):
        _text(spec, key, 512, required=False)
    return spec


def environment_script(spec: dict[str, Any], proxy_name: str) -> str:
    """``environment-<csvBase>.sh``, which the payload sources: each value quoted."""
    env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    env["X509_USER_PROXY"] = proxy_name
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def manifest(spec: dict[str, Any]) -> str:
    """``<csvBase>.csv``: one row per job."""
    return "\n".join(spec["csvRows"]) + "\n"


def task_params(spec: dict[str, Any], owner: str | None) -> dict[str, Any]:
    """PanDA's taskParamMap for the spec; the sandbox's name is :data:`ARCHIVE_MARK`."""
    out_ds = spec["outDS"]
    params: dict[str, Any] = {
        "vo": spec.get("vo") or "epic",
        "site": spec["site"],
        "workingGroup": spec.get("workingGroup") or "EIC",
        "prodSourceLabel": spec.get("prodSourceLabel") or "test",
        "processingType": spec.get("processingType") or "epicproduction",
        "taskType": spec.get("taskType") or "prod",
        # A production-role submission gets no server-side defaults for these.
        "taskPriority": _int(spec, "taskPriority", 900, 0, 10**6),
        "cloud": spec.get("cloud") or spec.get("workingGroup") or "EIC",
        "campaign": spec.get("campaign") or "",
        "taskName": out_ds,
        "userName": spec.get("userName") or owner or None,
        "noInput": True,
        "noOutput": True,
        "architecture": "",
        "transUses": "",
        "transHome": None,
        "transPath": TRANS_PATH,
        "coreCount": _int(spec, "nCore", 1, 1, 1024),
        "ramCount": _int(spec, "memory", 4096, 1, 10**7),
        "ramUnit": "MBPerCoreFixed",
        "nEvents": _int(spec, "nJobs", 1, 1, MAX_ROWS),
        "nEventsPerJob": _int(spec, "nEventsPerJob", 1, 1, 10**9),
        "jobParameters": [
            {"type": "constant", "value": '-j "" --sourceURL ${SURL}'},
            {"type": "constant", "value": "-r ."},
        ],
        "multiStepExec": {
            "preprocess": {"command": "${TRF}", "args": "--preprocess ${TRF_ARGS}"},
            "postprocess": {"command": "${TRF}", "args": "--postprocess ${TRF_ARGS}"},
            "containerOptions": {
                "containerExec": (
                    'echo "=== cat exec script ==="; cat __run_main_exec.sh; '
                    'echo; echo "=== exec script ==="; /bin/sh __run_main_exec.sh'
                ),
                "containerImage": spec.get("containerImage") or "",
            },
        },
        "log": {
            "type": "template",
            "param_type": "log",
            "value": f"{out_ds}.${{SN}}.log.tgz",
            "dataset": out_ds + "_log/",
            "hidden": True,
            "allowNoOutput": True,
        },
    }
    if spec.get("disk") is not None:
        params["workDiskCount"] = _int(spec, "disk", 0, 0, 10**8)
        params["workDiskUnit"] = "MB"
    if spec.get("skipScout"):
        params["skipScout"] = True
    else:
        params["cpuTimeUnit"] = "HS06sPerEvent"
    try:
        params["walltime"] = int(float(spec.get("walltimeHours", 2.0)) * 3600)
    except (TypeError, ValueError):
        raise SpecRefused("the EVGEN spec's walltimeHours is not a number") from None
    if spec.get("maxAttempt"):
        params["maxAttempt"] = _int(spec, "maxAttempt", 1, 1, 100)
    if spec.get("maxFailure"):
        params["maxFailure"] = _int(spec, "maxFailure", 1, 1, 100)
    if spec.get("disableReassign"):
        params["disableReassign"] = True
    if spec.get("containerImage"):
        params["container_name"] = spec["containerImage"]
    if spec.get("noLog"):
        del params["log"]
    params["jobParameters"].append({"type": "constant", "value": f"-a {ARCHIVE_MARK}"})
    exec_cmd = f"PANDAID=$PANDAID {spec['exec']}"
    rndm = re.search(r"%RNDM(:|=)(\d+)", exec_cmd)
    if rndm:
        exec_cmd = re.sub(r"%RNDM(:|=)\d+", "${SEQNUMBER}", exec_cmd)
        params["jobParameters"].append(
            {
                "type": "template",
                "param_type": "pseudo_input",
                "value": "${SEQNUMBER}",
                "dataset": "seq_number",
                "offset": rndm.group(2),
                "hidden": True,
            }
        )
    params["jobParameters"].extend(
        [
            {"type": "constant", "value": '-p "', "padding": False},
            {"type": "constant", "value": exec_cmd.replace(" ", "%20")},
            {"type": "constant", "value": '"'},
        ]
    )
    return params
