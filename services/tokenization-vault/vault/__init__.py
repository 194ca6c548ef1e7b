"""The card vault: the only place card numbers and CVVs are kept, encrypted."""
