"""`python -m tacticalctl`: the same CLI as the `tacticalctl` console script."""

from tacticalctl.app import main

main()
