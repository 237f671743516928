"""Publish Gatan DigitalMicrograph's live view over the sam4em-live frame wire protocol (docs/live_sources.md).

Runs inside DigitalMicrograph's Python (GMS 3.4+, Python 3.7+), so everything here is plain Python 3.7 with
numpy, pyzmq and msgpack only, and never imports ``sam4em_live``: `live_view` (the publishing loop and the
wire encoder), `adapter` (the `LiveView` seam and a file-backed live view for dry runs and tests),
`dm_adapter` (the only module that calls ``DigitalMicrograph``) and `sam4em_dm_live` (the script to run).
"""
