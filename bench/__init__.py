"""Benchmarks: the worker end to end beside the floor (a bare Redis echo), the model alone, a bare reference loop
and a Celery peer, all measured from the client side in one run. `tacticalctl bench` drives them."""
