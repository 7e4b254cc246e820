"""`JobQueue`: the producer, reader, schedule, control and usage parts over one shared base."""

from __future__ import annotations

from settler_jobs.queue.control import Control
from settler_jobs.queue.producer import Producer
from settler_jobs.queue.reads import Reader
from settler_jobs.queue.schedules import Schedules
from settler_jobs.queue.usage import Usage


class JobQueue(Producer, Reader, Schedules, Control, Usage):
    """Producer and reader side of every lane of the registered kinds."""
