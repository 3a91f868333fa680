"""Multi-process test harness: every service as its own OS process, a real NATS (one node or a
three-node cluster), real SMTP and the dev SMS provider in the test process, and a ledger that
drives referrals through the loop and checks that each reached its end exactly once.

Importable as ``support`` from tests (tests/ is on sys.path) and as ``tests.support`` from
benchmarks; modules inside use relative imports so both work."""
