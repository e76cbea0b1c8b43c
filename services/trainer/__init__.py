"""The trainer service: training jobs, the model registry and deployments."""
