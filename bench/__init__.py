"""Throughput benchmark: hotswap's executor against plain Celery, native canvas and celery-dyrygent.

Run ``.venv/bin/python -m bench`` (or ``bench/run``) from the project root; ``--help`` lists options.
"""
