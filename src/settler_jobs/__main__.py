"""`python -m settler_jobs` runs the CLI."""

from settler_jobs.cli.main import main

main()
