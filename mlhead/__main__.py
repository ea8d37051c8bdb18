"""``python -m mlhead`` behaves as the ``mlhead`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
