"""escalation: turns concerns into remedial-action meetings, agenda items and watch lists."""
