"""Stage 3, the evidence: the metric catalogue, comparison, statistics, gate and summary."""
