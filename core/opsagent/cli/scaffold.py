"""``opsagent new``: a new capability distribution from the cookiecutter template.

The template is ``templates/capability/`` in the source tree and ships inside the package
(``opsagent/templates/capability``), so it works from a checkout and from a wheel.
Cookiecutter comes with the ``dev`` extra: ``pip install 'opsagent[dev]'``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import opsagent

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "capability"


class ScaffoldError(RuntimeError):
    """The template could not be run; the message says what to do."""


def questions(template: Path = TEMPLATE) -> dict[str, Any]:
    """The template's questions and their defaults (``cookiecutter.json``, prompts left out)."""
    raw = json.loads((template / "cookiecutter.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def parse_answers(pairs: list[str], template: Path = TEMPLATE) -> dict[str, str]:
    """``key=value`` words from the command line, checked against the template's questions."""
    known = questions(template)
    answers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ScaffoldError(f"expected key=value, got {pair!r}; keys: {', '.join(known)}")
        if key not in known:
            raise ScaffoldError(f"the template asks no {key!r}; it asks: {', '.join(known)}")
        answers[key] = value
    return answers


def new(
    answers: Mapping[str, str],
    *,
    output_dir: Path = Path("."),
    interactive: bool = False,
    overwrite: bool = False,
    template: Path = TEMPLATE,
) -> Path:
    """Generate a capability distribution under ``output_dir``; return its directory.

    ``answers`` pre-fill the template's questions; the others are asked when
    ``interactive``, else take their defaults.
    """
    try:
        from cookiecutter.exceptions import FailedHookException, OutputDirExistsException
        from cookiecutter.main import cookiecutter
    except ImportError:
        raise ScaffoldError(
            "cookiecutter is not installed: pip install 'opsagent[dev]' (or pip install "
            "cookiecutter)"
        ) from None
    # Cookiecutter logs a traceback for a refusing hook; the hook already said why.
    logging.getLogger("cookiecutter").addHandler(logging.NullHandler())
    logging.getLogger("cookiecutter").propagate = False
    if not (template / "cookiecutter.json").is_file():
        raise ScaffoldError(f"no capability template at {template} (a broken installation?)")
    context = dict(answers)
    if "msg_type" in context and "name" not in context:
        # The name's default would otherwise be the template's example name.
        context["name"] = context["msg_type"].replace("_", " ").capitalize()
    context["_opsagent_version"] = ".".join(opsagent.__version__.split(".")[:2])
    try:
        made = cookiecutter(
            str(template),
            no_input=not interactive,
            extra_context=context,
            output_dir=str(output_dir),
            overwrite_if_exists=overwrite,
        )
    except OutputDirExistsException as exc:
        raise ScaffoldError(
            f"{exc}; choose another name, another --output-dir, or --force"
        ) from None
    except FailedHookException:
        raise ScaffoldError("the template refused the answers above; nothing was written") from None
    return Path(made)


def next_steps(path: Path) -> str:
    """What to type after ``opsagent new``, for the message it prints."""
    return f"cd {path}\npip install -e '.[test]'\npytest\nopsagent plugins"
