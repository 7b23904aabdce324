"""The catalogue's command text -> one ``prun`` argument vector, or a refusal.

The text is split with POSIX shell-word rules (blanks separate words; ``'...'``,
``"..."`` and backslash quote; backslash-newline continues a line, which is how the
catalogue lays out long commands).  The result is run as an argument vector, never by a
shell, so anything a shell would have given a meaning beyond "these words" is refused
rather than silently passed on as literal text: a second command (``;``, ``&&``, ``||``,
``&``, a newline), a pipe, a redirection, a subshell, command or process substitution,
parameter, tilde, brace or glob expansion, a comment, an environment assignment, or any
program other than ``prun``.  Quoted text is just text: ``--exec "a.sh; b.sh"`` is fine.

prun also reads and writes local files when told to (``--inTarBall``, ``--dumpJson``,
``--workDir`` ...).  Those options are refused too: the submission must upload the empty
sandbox it is given and write nothing outside it, whatever the catalogue says.
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

#: prun options that name a local file or directory to read, upload or write.
LOCAL_FILE_OPTIONS = (
    "--workDir",
    "--useHomeDir",
    "--inTarBall",
    "--outTarBall",
    "--loadJson",
    "--dumpJson",
    "--dumpTaskParams",
    "--inDsTxt",
    "--inOutDsJson",
    "--goodRunListXML",
    "--tmpDir",
    "--pfnList",
)

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
    for arg in words[1:]:
        if not arg.startswith("--") or arg == "--":
            continue
        opt = arg[2:].split("=", 1)[0]
        for refused in LOCAL_FILE_OPTIONS:
            # argparse accepts any unambiguous prefix of an option name.
            if opt and refused[2:].startswith(opt):
                raise CommandRefused(
                    f"prun option {arg.split('=', 1)[0]!r} ({refused}) reads or writes local "
                    f"files; the submission uploads only its empty sandbox"
                )
    return words
