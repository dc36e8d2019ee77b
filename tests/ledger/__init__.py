"""The ledger contract suite: one set of tests that every ledger backend must pass."""
