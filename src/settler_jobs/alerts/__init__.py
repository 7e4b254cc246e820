"""Alerting: probes of queues and workers, the built-in evaluator and depth history."""
