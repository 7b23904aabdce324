"""What the host tells the world about itself: systemd notifications, health, logs,
Prometheus metrics and the monitor's heartbeats and action log."""
