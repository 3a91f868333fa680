"""The `ensemble` command: the whole system on the embedded default, one service alone, the demo."""
