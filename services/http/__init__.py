"""HTTP plumbing shared by every service: app factory, error bodies, auth, health and metrics."""
