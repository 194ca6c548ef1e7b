"""Payment domain logic: plain Python, no I/O, tested without servers."""
