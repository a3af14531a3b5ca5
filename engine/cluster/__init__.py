"""Herald on several processes and machines: workers that lease chunks of runs from the
PostgreSQL store (``worker.py``), sender limits shared through Redis (``limits.py``), and
control messages that reach every worker (``control.py``)."""
