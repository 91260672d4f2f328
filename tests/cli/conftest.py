# Every test module gets the fixtures of tests/support/popgate_test.py.
pytest_plugins = ["popgate_test"]
