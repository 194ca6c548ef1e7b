"""The load benchmark (`make bench`, `python -m bench`): an open-model load generator.

Journeys (create a UPI payment, poll it until SUCCESS) start at a constant arrival rate,
whatever the gateway does with earlier ones, so a slow gateway shows up as latency and errors
rather than as a lower offered load. See docs/benchmark.md.
"""
