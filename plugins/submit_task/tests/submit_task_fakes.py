"""The fakes of the two services a submission talks to: the monitor's catalogue (PCS) and
the PanDA server, shared with the other PanDA capabilities in :mod:`opsagent.testing`
(``opsagent/testing/monitor.py`` and ``panda.py`` say what they follow)."""

from __future__ import annotations

from opsagent.testing import FakeCatalogue, FakePanda

__all__ = ["FakeCatalogue", "FakePanda"]
