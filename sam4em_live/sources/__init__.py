"""Frame sources: the `FrameSource` seam, ZeroMQ, replay, the stand-in camera and the source registry."""
