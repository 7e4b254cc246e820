"""`python -m settler_jobs` runs the CLI."""

from settler_jobs.cli import main

main()
