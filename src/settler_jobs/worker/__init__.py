"""The worker: the runtime serving every lane of the selected kinds, and its process."""
