"""The prepared GPU check of the SAM 2 backend (issue 23): speed, latency and memory on a CUDA machine.

``python -m tools.gpu_check`` runs the SAM 2 backend with random weights (speed does not depend on the
weights; outputs are not segmentations) over a matrix of models x particle counts x modes, then end to
end through the service with frames arriving over ZeroMQ, within a time budget, and writes
``gpu_check.json`` + ``gpu_check.md``. The device machine has no internet: ``--prepare-wheels DIR`` (run
here) collects the wheels of everything the check imports beyond torch, ``--install-from DIR`` (run
there) installs them offline. See docs/sam2_backend.md, "GPU check".
"""
