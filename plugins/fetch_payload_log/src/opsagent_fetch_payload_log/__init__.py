"""opsagent capability ``fetch_payload_log``: a PanDA job's log from Rucio over xrootd
into the shared cache, safely.  The declaration is in :mod:`.capability`."""

__version__ = "0.1.0"
