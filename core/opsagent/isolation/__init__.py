"""Where jobs run: per-capability lanes (workers), process isolation through a fork
server (forking, child), bounded programs (proc), the doer call (execute)."""
