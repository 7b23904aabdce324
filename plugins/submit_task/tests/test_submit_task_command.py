"""The catalogue's text becomes exactly one prun argument vector, or is refused."""

from __future__ import annotations

import shlex

import pytest
from opsagent_submit_task.command import OPTIONS, CommandRefused, prun_argv, split_words
from submit_task_support import COMMAND, TASK


def test_the_catalogue_layout_with_line_continuations_is_one_prun_argv() -> None:
    assert prun_argv(COMMAND) == [
        "prun",
        "--exec",
        "./run.sh; echo done",
        "--outDS",
        TASK,
        "--containerImage",
        "docker://eicweb/jug_xl:26.06.0-stable",
        "--site",
        "BNL_PanDA_1",
        "--prodSourceLabel",
        "test",
        "--vo",
        "wlcg",
        "--nJobs",
        "2",
        "--noBuild",
        "--official",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "prun --exec 'a; b | c && d > e $(f) `g` $HOME ~ *' --outDS x",
        'prun --exec "a; b | c && d > e" --outDS x',
        "prun --exec a\\;b --outDS x",
        "prun --outDS=user.x.y --nJobs=3",
        "prun --exec 'echo {a,b}' --outDS x",
        'prun --exec "echo $" --outDS a$',
        'prun --exec "line one\nline two" --outDS x',
    ],
)
def test_quoted_or_escaped_text_is_just_text_and_matches_shlex(text: str) -> None:
    assert split_words(text) == shlex.split(text)
    assert prun_argv(text)[0] == "prun"


REFUSED = [
    # (command text, words the reason must contain)
    ("prun --outDS x; rm -rf /", "command separator ';'"),
    ("prun --outDS x && touch y", "'&'"),
    ("prun --outDS x || touch y", "pipe"),
    ("prun --outDS x &", "'&'"),
    ("prun --outDS x | tee log", "pipe '|'"),
    ("prun --outDS x > out.txt", "output redirection"),
    ("prun --outDS x 2>&1", "output redirection"),
    ("prun --outDS x < /dev/null", "input redirection"),
    ("prun --exec <(cat /etc/passwd)", "input redirection or process substitution"),
    ("(prun --outDS x)", "subshell"),
    ("prun --outDS $(whoami)", "command substitution '$(...)'"),
    ('prun --exec "$(whoami)"', "command substitution '$(...)'"),
    ("prun --outDS `whoami`", "command substitution '`...`'"),
    ('prun --exec "`id`"', "command substitution '`...`'"),
    ("prun --outDS $USER.test", "parameter expansion '$U...'"),
    ('prun --exec "${HOME}/run.sh"', "parameter expansion '${...}'"),
    ("prun --outDS $((1+2))", "command substitution"),
    ("prun --exec $'a\\nb'", "quoting after '$'"),
    ("prun --outDS x\nrm -rf /", "newline"),
    ("prun --outDS x # trailing comment", "comment"),
    ("prun --workDir ~/private", "tilde"),
    ("prun --outDS user.x.*", "glob"),
    ("prun --outDS user.{a,b}", "brace expansion"),
    ("prun --outDS 'unterminated", "unterminated single quote"),
    ('prun --outDS "unterminated', "unterminated double quote"),
    ("prun --outDS x\\", "backslash at the end"),
    ("prun --outDS x\x07", "control character"),
    ("PANDA_URL=http://evil prun --outDS x", "environment assignment"),
    ("env prun --outDS x", "runs 'env', not 'prun'"),
    ("sudo -u other prun --outDS x", "runs 'sudo'"),
    ("bash -c 'prun --outDS x'", "runs 'bash'"),
    ("/usr/bin/prun --outDS x", "runs '/usr/bin/prun'"),
    ("pathena --outDS x", "runs 'pathena'"),
    ("touch /tmp/x", "runs 'touch'"),
    ("", "empty"),
    ("   \\\n  ", "empty"),
    ("prun --outDS x --inTarBall /home/op/.ssh/id_rsa.tgz", "--inTarBall"),
    ("prun --outDS x --workDir=/home/op", "--workDir"),
    ("prun --outDS x --work /home/op", "written in full: --workingGroup?"),
    ("prun --outDS x --dumpJson /etc/cron.d/x", "--dumpJson"),
    ("prun --outDS x --loadJson /tmp/opts.json", "--loadJson"),
    ("prun --outDS x --outTarBall /tmp/x.tgz", "--outTarBall"),
    ("prun --outDS x --useHomeDir", "--useHomeDir"),
]


@pytest.mark.parametrize(("text", "why"), REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_anything_but_one_plain_prun_invocation_is_refused_with_a_reason(
    text: str, why: str
) -> None:
    with pytest.raises(CommandRefused) as info:
        prun_argv(text)
    assert why in str(info.value)


def test_backslash_in_double_quotes_follows_the_shell_not_shlex() -> None:
    # sh: inside "...", a backslash quotes only $ ` " \\ and newline (shlex keeps it).
    text = 'prun --exec "cost \\$5, \\"q\\", \\`t\\`, \\n, a\\\nb" --outDS x'
    assert prun_argv(text)[2] == 'cost $5, "q", `t`, \\n, ab'


def test_a_refusal_says_where() -> None:
    with pytest.raises(
        CommandRefused, match=r"at character 15 \(near 'prun --outDS x; rm -rf /'\)"
    ):
        prun_argv("prun --outDS x; rm -rf /")


# -- the option allow-list, against every option prun knows ---------------------------


def prun_options() -> dict[str, bool]:
    """Every option string of the installed prun's parser -> whether it takes a value."""
    from pandaclient import PrunArgs

    parser = PrunArgs.build_parser()
    return {opt: act.nargs != 0 for act in parser._actions for opt in act.option_strings}


def _usage(option: str, takes_value: bool) -> str:
    return (
        f"prun --outDS {TASK} {option} ../panda/.token"
        if takes_value
        else (f"prun --outDS {TASK} {option}")
    )


def test_prun_knows_every_allowed_option_and_its_arity() -> None:
    known = prun_options()
    assert {opt: known.get(opt) for opt in OPTIONS} == OPTIONS


@pytest.mark.parametrize(("option", "takes_value"), sorted(prun_options().items()))
def test_every_prun_option_is_accepted_only_if_allowed(option: str, takes_value: bool) -> None:
    text = _usage(option, takes_value)
    if option in OPTIONS:
        assert prun_argv(text)[3] == option
    else:
        with pytest.raises(CommandRefused, match="is not one a production task command uses"):
            prun_argv(text)
        if takes_value:  # the --name=value form too
            with pytest.raises(CommandRefused):
                prun_argv(f"prun --outDS {TASK} {option}=../panda/.token")


def abbreviations() -> list[str]:
    """Every prefix of a prun option that prun's parser resolves (to one option or
    several), the options themselves aside."""
    known = prun_options()
    longs = [opt for opt in known if opt.startswith("--")]
    return sorted({opt[:n] for opt in longs for n in range(3, len(opt))} - set(known))


def test_every_abbreviation_prun_would_accept_is_refused() -> None:
    from pandaclient import PrunArgs

    parser = PrunArgs.build_parser()
    assert parser.allow_abbrev  # why abbreviations matter at all
    accepted = []
    for abbrev in abbreviations():
        try:
            prun_argv(f"prun --outDS {TASK} {abbrev} x")
        except CommandRefused:
            continue
        accepted.append(abbrev)
    assert accepted == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        # Each of these reads a local file and sends what it holds to PanDA.
        (f"prun --outDS {TASK} --inputFileList ../panda/.token", "'--inputFileList' is not one"),
        (f"prun --outDS {TASK} --eventPickEvtList=/run/creds/t", "'--eventPickEvtList' is not"),
        (f"prun --outDS {TASK} --inputF ../panda/.token", "'--inputF' is not one"),
        (f"prun --outDS {TASK} --eventPick ../panda/.token", "'--eventPick' is not one"),
        # prun's own guard against a second task of the same name stays on.
        (f"prun --outDS {TASK} --allowTaskDuplication", "'--allowTaskDuplication' is not"),
        (f"prun --outDS {TASK} --allowTask", "'--allowTask' is not one"),
        (
            f"prun --outD {TASK}",
            "'--outD' is not one a production task command uses (options are written in full: "
            "--outDS?)",
        ),
        (f"prun --outDS {TASK} -y", "'-y' is not one"),
        (f"prun --outDS {TASK} -v3", "'-v3' is not one"),
        (f"prun --outDS {TASK} -- --exec x", "'--' is not one"),
        (f"prun --outDS {TASK} stray", "'stray' is neither an option nor the value of one"),
        (f"prun --outDS {TASK} --noBuild=yes", "--noBuild takes no value"),
        (f"prun --outDS {TASK} --site", "--site needs a value"),
        (f"prun --outDS {TASK} --site --noBuild", "--site needs a value"),
    ],
)
def test_options_outside_the_allow_list_are_refused(text: str, why: str) -> None:
    with pytest.raises(CommandRefused) as info:
        prun_argv(text)
    assert why in str(info.value)
