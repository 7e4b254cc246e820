"""Scheduled system jobs: the plan (BullMQ job schedulers), their run log and payloads."""
