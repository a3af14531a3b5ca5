"""A fake SMS gateway speaking herald-json, fast enough never to be the bottleneck.

Wire format ("herald-json", HTTP/1.1 with keep-alive, on loopback only, 127.0.0.1 by default):

- ``POST /send`` (any path but ``/stats`` and ``/inbound`` is treated as a send) with
  ``{"messages": [{"id", "to", "from", "text", "segments"}]}`` is answered ``200`` with
  ``{"results": [{"id", "status": "accepted"|"rejected"|"retry", "provider_id", "error"}]}``,
  one result per message, in order.
- ``429`` (throttled; whole request refused): header ``Retry-After`` in whole seconds, rounded
  up as RFC 9110 wants, and body ``{"error": "throttled", "retry_after": <exact seconds>}``.
- ``500``: a simulated server error (whole request refused). ``400``: the body is not valid
  herald-json. A simulated timeout never answers and closes after ``hang`` seconds.
- ``GET /stats``: the ``SimStats`` counters as JSON.
- ``POST /inbound`` with ``{"inbound": [{"from": "+44...", "text": "STOP", "to", "at"}]}``:
  recipients' replies, POSTed on as they are to ``inbound_url`` (Herald's
  ``/api/v1/inbound/{gateway}?secret=...``, loopback only); answered ``{"status": <the
  status Herald answered, 0 for none>}``. In Python: ``await sim.send_inbound(phone, text)``.
- Delivery receipts, when ``receipt_url`` is set (loopback only), are POSTed there
  ``receipt_delay`` seconds after acceptance, many per request:
  ``{"receipts": [{"provider_id", "id", "status": "delivered"|"undelivered", "error"}]}``.

Messages are processed, and counted, when the request arrives; ``latency`` delays only the
answer, as with a real gateway, so a client that times out may see its retry accepted twice.
``accepted_ids`` counts acceptances per message id for "none accepted twice" assertions.
With ``idempotent``, a resubmitted id that was already accepted gets its first provider id
back and is not accepted again.

Python: ``async with GatewaySimulator(latency=0.01) as sim: ... sim.url ...``; change the
behaviour mid-test with ``sim.configure(error_rate=1.0)``; ``ReceiptSink`` collects receipts
(``GatewaySimulator(receipt_url=sink.url)``, ``await sink.wait(n)``). Command line:
``herald simulate --port 8025 --latency 0.01 --max-throughput 2000`` (see ``cli.py``).

An SMS centre over SMPP 3.4, ``SmppSimulator`` (``smpp.py``; ``herald simulate --smpp
--port 2775``), has the same spirit: fault knobs (throttling, errors, no answer, unbind or
a dropped socket mid-session, receipts late, early, in TLV or text form, inbound messages)
and a record of every part it took, reassembled into whole messages. Its framing and GSM
03.38 table are its own (``smpp_wire.py``), not Herald's codec: the checks of the ``smpp``
driver run through it as through an SMSC written apart.

Modules: ``options`` (SimOptions, SimStats), ``wire`` (the herald-json bodies), ``http`` (the
minimal HTTP/1.1 server), ``server`` (GatewaySimulator), ``receipts`` (receipt callbacks and
ReceiptSink), ``cli`` (``herald simulate``).
"""

from engine.simulator.options import SimOptions, SimStats
from engine.simulator.receipts import ReceiptSink
from engine.simulator.server import GatewaySimulator
from engine.simulator.smpp import SmppSimulator
from engine.simulator.wire import InboundMessage, Receipt

__all__ = ["GatewaySimulator", "InboundMessage", "Receipt", "ReceiptSink", "SimOptions",
           "SimStats", "SmppSimulator"]
