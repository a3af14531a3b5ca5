"""Fakes of real gateways' APIs, written from their documented wire formats, one module per
bundled driver (``tests/fakes/<driver>.py``).

Each module has ``gateway(tmp_path)``, an async context manager that starts its fake on
loopback and yields the ``[gateways.NAME]`` options (``driver`` left out) that point the
driver at it. ``http.py`` is the HTTP/1.1 server (h11) the vendors' fakes share. The
driver contract suite (``tests/test_driver_contract.py``) runs every bundled driver against
its fake this way; the module's own tests go further.
"""
