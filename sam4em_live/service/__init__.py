"""The service: state machine, frame queue, pipeline worker, the `Service` runner and the composition root."""
