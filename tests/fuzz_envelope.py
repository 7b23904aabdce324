"""Coverage-guided fuzzing of the envelope parser (run by tests/system/test_hostile.py).

Usage: python tests/fuzz_envelope.py -max_total_time=20 [corpus_dir]
Any exception other than EnvelopeError is a finding: atheris reports it and exits non-zero.
So is an accepted body the host could not write again as strict UTF-8 JSON (journal,
events, logs): an infinity, a lone surrogate.
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from opsagent.host.envelope import EnvelopeError, parse


def one(data: bytes) -> None:
    try:
        env = parse(data)
    except EnvelopeError as exc:
        assert exc.reason, "an EnvelopeError without a reason"
        return
    assert isinstance(env.body, dict) and isinstance(env.msg_type, str) and env.msg_type
    json.dumps(env.body, allow_nan=False, ensure_ascii=False).encode("utf-8")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
