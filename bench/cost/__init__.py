"""What a method costs: parameters, FLOPs, memory, latency (per run) and the paper-scale study."""
