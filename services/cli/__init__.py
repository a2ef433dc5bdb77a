"""The operator's command line: ``carewatch ...``."""
