"""Fault-injection campaign against a live service on loopback (issue 18); see ``python -m tools.chaos -h``.

The long cases live here; the fast fault cases are tests in ``tests/``. Every case starts the real
``sam4em-live serve`` (or drives the real sockets of one), injects its fault, and then checks what a user
would see: an exit status, a control channel that answers, counted frames, and a run folder whose files
parse and agree with ``run.json`` (`tools.chaos.runcheck`).
"""
