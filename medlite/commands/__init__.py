"""One module per ``medlite`` subcommand, each with ``register(subparsers, common)`` and ``run(args)``.

A command module imports its stage inside ``run``, so that ``medlite predict``
on a cart never loads TensorFlow and ``medlite train`` there says what to install.
"""
