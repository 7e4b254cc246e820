"""Webhooks: endpoints, signed events, deliveries with retries and the delivery log."""
