"""`python -m unift ...` is the same as the `unift` command."""

from unift.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
