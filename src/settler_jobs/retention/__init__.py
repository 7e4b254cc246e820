"""Data retention: targets deleting expired rows in bounded batches, and its job."""
