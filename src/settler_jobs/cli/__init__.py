"""`settler-jobs`: the command line, one module per command group."""
