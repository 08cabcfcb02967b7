"""Reading and writing simulated signals (the ``SIGNALS.npz`` contract)."""
