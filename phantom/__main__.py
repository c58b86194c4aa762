"""``python -m phantom``: the same as the ``phantom`` command."""

from phantom.cli import main

if __name__ == "__main__":
    main(prog_name="phantom")
