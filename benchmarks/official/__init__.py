"""Vectorised ports of each query-dependent method's official evaluation, the speed peers of tvr-bench's scoring.

One module per method (``xclip``, ``xpool``, ``drl``, ``ts2net``, ``textpool``, ``tighttransf``): each port is
written from reading that repository's eval loop and modeling file (named in the module docstring) and follows
its block size (``batch_size_val`` of the MSR-VTT script), its per-block re-work and its tensor layouts.
``common`` holds what every comparison shares: the cached inputs, the measurements and the result table.
Used by benchmarks/test_scoring_vs_official.py (``make benchmark``); never imported by the package.
"""
