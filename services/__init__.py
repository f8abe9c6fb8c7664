"""Shared kernel of the lead handoff service: settings, config, events, bus, database, runtime."""
