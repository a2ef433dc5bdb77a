"""The carewatch services: one package each."""
