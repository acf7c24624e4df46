"""Worker processes the scenarios start with ``sys.executable -m benchmarks.workers.<name> ...``.

Each takes its parameters from argv and writes one JSON result file (``--result``): timestamps it took itself
(unix time, comparable across processes of this machine), counts, and what it measured.
"""
