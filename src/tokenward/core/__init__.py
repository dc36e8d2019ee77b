"""The pure core: usage, prices, estimates, budgets, windows and decisions. No I/O here."""
