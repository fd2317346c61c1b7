"""The runner's exit codes (README, "The runner"): 0 done, 1 a bug or an unexpected failure, 2 the configuration (fix
it, then run again), 3 transient (the endpoint, the network, another runner holding the collection: run again).
Standard library only: the console script's first import (cli.py) reads them before the CDK is imported."""
EXIT_OK, EXIT_SYSTEM, EXIT_CONFIG, EXIT_TRANSIENT = 0, 1, 2, 3
