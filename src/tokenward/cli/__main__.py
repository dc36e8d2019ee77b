"""``python -m tokenward.cli``: the same as the ``tokenward`` command."""

from tokenward.cli.main import main

main()
