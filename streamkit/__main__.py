"""``python -m streamkit``: the command line."""

from streamkit.cli import main

if __name__ == "__main__":
    main()
