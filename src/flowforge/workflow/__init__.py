"""The workflow IR and everything that reads or writes it. Never imports torch."""
