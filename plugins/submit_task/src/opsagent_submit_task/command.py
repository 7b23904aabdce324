"""The catalogue's command text -> one ``prun`` argument vector, or a refusal.

The text is split with POSIX shell-word rules (blanks separate words; ``'...'``,
``"..."`` and backslash quote; backslash-newline continues a line, which is how the
catalogue lays out long commands).  The result is run as an argument vector, never by a
shell, so anything a shell would have given a meaning beyond "these words" is refused
rather than silently passed on as literal text: a second command (``;``, ``&&``, ``||``,
``&``, a newline), a pipe, a redirection, a subshell, command or process substitution,
parameter, tilde, brace or glob expansion, a comment, an environment assignment, or any
program other than ``prun``.  Quoted text is just text: ``--exec "a.sh; b.sh"`` is fine.

prun also reads, uploads and writes local files when told to (``--inTarBall``,
``--inputFileList``, ``--eventPickEvtList``, ``--dumpJson``, ``--workDir`` ...), and can be
told to drop its own guard against a second task of the same name
(``--allowTaskDuplication``).  So its options are not screened against a list of known
dangers but checked against :data:`OPTIONS`, the options the catalogue's command
(``build_panda_command`` of PCS) is made of, none of which names a local file.  Each must
be written in full, as ``--name value`` or ``--name=value``: prun's parser would accept
any unambiguous prefix (``--inputF``), which would make every refusal easy to walk around.
"""

from __future__ import annotations

import re

import attrs

PROGRAM = "prun"

_OPERATORS = {
    ";": "a command separator ';'",
    "&": "'&' (background job or '&&' list)",
    "|": "a pipe '|' (or an '||' list)",
    "<": "an input redirection or process substitution '<'",
    ">": "an output redirection '>'",
    "(": "a subshell '('",
    ")": "a subshell ')'",
}

#: The prun options a production task command uses (PCS ``build_panda_command``), and
#: whether each takes a value.  Anything else -- another prun option, an abbreviation, a
#: short option, ``--`` -- is refused.
OPTIONS: dict[str, bool] = {
    "--exec": True,
    "--outDS": True,
    "--official": False,
    "--containerImage": True,
    "--site": True,
    "--workingGroup": True,
    "--prodSourceLabel": True,
    "--vo": True,
    "--processingType": True,
    "--nJobs": True,
    "--nEventsPerJob": True,
    "--nCore": True,
    "--noBuild": False,
    "--expertOnly_skipScout": False,
    "--outputs": True,
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SHOWN = 40


class CommandRefused(ValueError):
    """The catalogue's text is not exactly one plain ``prun`` invocation."""


@attrs.frozen
class _Char:
    c: str
    quoted: bool


def _near(text: str, i: int) -> str:
    start = max(0, i - 15)
    snippet = text[start : i + 15].replace("\n", "\\n")
    return f"at character {i + 1} (near {snippet!r})"


def _expansion(text: str, i: int, quoted: bool) -> str | None:
    """What ``$`` at ``i`` starts in a shell, or ``None`` for a literal dollar."""
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if nxt == "(":
        return "command substitution '$(...)'"
    if nxt == "{":
        return "parameter expansion '${...}'"
    if nxt and (nxt.isalnum() or nxt in "_@*#?$!-"):
        return f"parameter expansion '${nxt}...'"
    if nxt in ("'", '"') and nxt and not quoted:
        return f"{nxt}...{nxt} quoting after '$'"
    return None


def split_words(text: str) -> list[str]:
    """Split ``text`` into words by shell rules, refusing anything beyond plain words."""
    text = text.replace("\r\n", "\n")
    for i, ch in enumerate(text):
        if (ord(ch) < 32 and ch not in "\t\n") or ord(ch) == 127:
            raise CommandRefused(f"a control character {ch!r} {_near(text, i)}")
    words: list[list[_Char]] = []
    cur: list[_Char] = []
    started = False
    i, n = 0, len(text)

    def refuse(what: str, at: int) -> CommandRefused:
        return CommandRefused(f"{what} {_near(text, at)}")

    while i < n:
        c = text[i]
        if c in " \t":
            if started:
                words.append(cur)
                cur, started = [], False
            i += 1
        elif c == "\n":
            if text[i:].strip(" \t\n"):
                raise refuse("a newline outside quotes (a second command)", i)
            break  # only blank lines follow: the end of the text
        elif c == "\\":
            if i + 1 >= n:
                raise refuse("a backslash at the end", i)
            if text[i + 1] != "\n":  # backslash-newline is a continuation: dropped
                cur.append(_Char(text[i + 1], True))
                started = True
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise refuse("an unterminated single quote", i)
            cur.extend(_Char(x, True) for x in text[i + 1 : end])
            started = True
            i = end + 1
        elif c == '"':
            started = True
            j = i + 1
            while True:
                if j >= n:
                    raise refuse("an unterminated double quote", i)
                d = text[j]
                if d == '"':
                    break
                if d == "\\" and j + 1 < n and text[j + 1] in '$`"\\\n':
                    if text[j + 1] != "\n":
                        cur.append(_Char(text[j + 1], True))
                    j += 2
                    continue
                if d == "`":
                    raise refuse("command substitution '`...`'", j)
                if d == "$" and (what := _expansion(text, j, quoted=True)):
                    raise refuse(what, j)
                cur.append(_Char(d, True))
                j += 1
            i = j + 1
        elif c == "`":
            raise refuse("command substitution '`...`'", i)
        elif c == "$" and (what := _expansion(text, i, quoted=False)):
            raise refuse(what, i)
        elif c in _OPERATORS:
            raise refuse(_OPERATORS[c], i)
        elif c == "#" and not started:
            raise refuse("a comment '#'", i)
        elif c == "~" and not started:
            raise refuse("tilde expansion '~'", i)
        elif c in "*?[":
            raise refuse(f"an unquoted glob character {c!r} (quote it)", i)
        else:
            cur.append(_Char(c, False))
            started = True
            i += 1
    if started:
        words.append(cur)
    for word in words:
        if _brace_expansion(word):
            shown = "".join(ch.c for ch in word)
            raise CommandRefused(f"brace expansion in {shown[:_MAX_SHOWN]!r} (quote it)")
    return ["".join(ch.c for ch in word) for word in words]


def _brace_expansion(word: list[_Char]) -> bool:
    """An unquoted ``{a,b}`` or ``{1..3}``, which bash would expand into several words."""
    for k, ch in enumerate(word):
        if ch.c != "{" or ch.quoted:
            continue
        inner: list[_Char] = []
        for other in word[k + 1 :]:
            if other.c == "}" and not other.quoted:
                body = "".join(x.c if not x.quoted else "\0" for x in inner)
                if "," in body or ".." in body:
                    return True
                break
            inner.append(other)
    return False


def prun_argv(text: str) -> list[str]:
    """The catalogue's text as ``["prun", arg, ...]``; :class:`CommandRefused` otherwise."""
    words = split_words(text)
    if not words:
        raise CommandRefused("the command is empty")
    first = words[0]
    name, eq, _ = first.partition("=")
    if eq and _NAME.fullmatch(name):
        raise CommandRefused(f"an environment assignment {first[:_MAX_SHOWN]!r} before the command")
    if first != PROGRAM:
        raise CommandRefused(
            f"the command runs {first[:_MAX_SHOWN]!r}, not {PROGRAM!r}; only a bare prun "
            f"invocation is accepted (the capability runs panda-client's own prun)"
        )
    _check_options(words[1:])
    return words


def _check_options(args: list[str]) -> None:
    """Every word is an allowed option in full, or the value of the one before it."""
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, _value = arg.partition("=")
        if not arg.startswith("-"):
            raise CommandRefused(
                f"{arg[:_MAX_SHOWN]!r} is neither an option nor the value of one "
                f"(prun takes no positional arguments)"
            )
        takes_value = OPTIONS.get(name) if name.startswith("--") else None
        if takes_value is None:
            raise CommandRefused(_not_allowed(name))
        if eq and not takes_value:
            raise CommandRefused(f"prun option {name} takes no value, got {arg[:_MAX_SHOWN]!r}")
        if takes_value and not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                raise CommandRefused(f"prun option {name} needs a value")
            i += 1
        i += 1


def _not_allowed(name: str) -> str:
    shown = name[:_MAX_SHOWN]
    full = [opt for opt in OPTIONS if opt.startswith(name) and name.startswith("--")]
    hint = f" (options are written in full: {', '.join(full)}?)" if len(name) > 2 and full else ""
    return (
        f"prun option {shown!r} is not one a production task command uses{hint}; the "
        f"options accepted are {', '.join(OPTIONS)} (options that read or write local files, "
        f"or that let PanDA take a second task of the same name, are never passed on)"
    )
