"""A plugin that fails at import, as a broken deployment would."""

raise ImportError("opsagent_testbroken needs a library that is not installed (on purpose)")
