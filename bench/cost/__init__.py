"""What a method costs, measured one way for every command: parameters (``params``), FLOPs (``flops``), memory
(``memory``), latency (``latency``), block sizing of the chunked score matrix (``blocks``) and the paper-scale
study that combines them (``efficiency``)."""

from tvr_bench.bench.cost.flops import (ATTENTION_FLOP_FORMULAS, FLOP_CONVENTION, count_flops, dummy_frames,
                                        dummy_tokens, flop_profile)
from tvr_bench.bench.cost.latency import query_latency, time_call
from tvr_bench.bench.cost.memory import MemoryMeter
from tvr_bench.bench.cost.params import param_counts

__all__ = ["ATTENTION_FLOP_FORMULAS", "FLOP_CONVENTION", "MemoryMeter", "count_flops", "dummy_frames", "dummy_tokens",
           "flop_profile", "param_counts", "query_latency", "time_call"]
