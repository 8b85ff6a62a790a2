"""`python -m tacticalctl`: the console script `tacticalctl`, where it is not on PATH."""

from tacticalctl.app import main

if __name__ == "__main__":
    main()
