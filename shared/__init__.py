"""The carewatch contract: what every service shares (events, topology, settings, db helpers)."""
