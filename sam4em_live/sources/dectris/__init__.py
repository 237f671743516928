"""DECTRIS detectors over the SIMPLON stream interface (v1 and v2): `DectrisFrameSource`.

`stream_v1` / `stream_v2` decode messages into the records of `messages`; `compression` decompresses
bitshuffle-LZ4 and LZ4 payloads; `corrections` applies the pixel mask and flatfield; `source` is the
`FrameSource`. The stand-in publisher the tests use is ``tools/dectris_standin``.
"""
