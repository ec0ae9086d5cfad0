"""``python -m qeu_tune``: the ``qeu-tune`` command."""

from qeu_tune.commands.main import main

if __name__ == "__main__":
    main()
