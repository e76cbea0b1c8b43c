"""The decision service: use cases and their blueprint versions, real-time decisions
(Decide, DecideBatch, DecideStream), decision logging to the feedback service, and
hot-swapped ONNX models from the trainer's deployments."""
