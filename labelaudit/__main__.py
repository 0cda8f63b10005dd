"""``python -m labelaudit …``: the same command line as ``labelaudit …``."""

from .cli.app import main

if __name__ == "__main__":
    main()
