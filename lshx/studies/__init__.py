"""Studies of the method itself, built on the search engine: tables (every configuration of a
pool trained to the end), replays of searches on them, the correlation study, the report of
a run DB, the kernel benchmarks, and their figures."""
