"""What every Ensemble service needs and nothing else: settings, districts, database, broker and
streams, the transactional outbox, idempotent consumers with dead-lettering, metrics, hosting."""
