# Every test module gets the fixtures of tests/support/popgate_test.py, and
# postgres_server / pg_database of tests/support/private_postgres.py.
pytest_plugins = ["popgate_test", "private_postgres"]
