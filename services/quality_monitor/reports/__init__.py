"""Reports for committees and the public: the monthly CQRM pack per provider, the quarterly
Quality & Performance report across providers, and "you said, we did" per provider and
quarter. Built from quality-monitor's own tables and escalation's HTTP API (read with the
service's own token), rendered as PDF (Typst), HTML, CSV and XLSX, and kept with versions.
"""
