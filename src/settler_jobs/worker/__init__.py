"""The worker: the runtime serving every lane of the selected kinds.

Its process (event loop, signals, the embedded API) lives in `cli.serve`.
"""
