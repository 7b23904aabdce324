"""Testing kit for capability authors (a pytest plugin, registered as ``pytest11``)."""
