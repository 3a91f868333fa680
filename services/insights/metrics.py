"""The insights service's Prometheus series."""

from prometheus_client import Counter, Histogram

PACKS = Counter("ensemble_insights_packs", "Data packs produced, by scope and format",
                ["scope", "format"])
PACK_SECONDS = Histogram("ensemble_insights_pack_seconds", "Time to build a data pack",
                         ["scope"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DIGESTS = Counter("ensemble_insights_digests", "Weekly staff digests claimed and requested")
