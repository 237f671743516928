"""A stand-in DECTRIS detector: the SIMPLON stream v1 and v2 messages, written from DECTRIS's documentation.

``python -m tools.dectris_standin --stream v2 --compression bslz4 --frames 200 --fps 50`` publishes a
series on ``tcp://127.0.0.1:31001`` (v1: 9999); see `tools.dectris_standin.publisher`.
"""
