"""The feedback service: stores decisions and outcomes, joins them by each blueprint
version's reward spec, and serves training data, single decisions and statistics."""
