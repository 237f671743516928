"""The recorder sink (`Recorder`): a run directory per run, written on a background thread.

``sink`` (the `Sink`), ``messages`` (what is queued), ``writer_thread`` (bounded queue, backpressure
policy, batching), ``run_writer`` (message type -> files), ``files`` (one writer per file), ``run_layout``
(the files' names, run.json's ``files`` and ``series_list``), ``run_outcome`` (problems -> final status).
"""

from sam4em_live.sinks.recorder.sink import Recorder, RecorderError, check_out_dir

__all__ = ["Recorder", "RecorderError", "check_out_dir"]
