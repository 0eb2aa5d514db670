"""The only code that runs beside submission code: the worker process of a trial, its confinement, the entry loader.

The parent starts `python -m harness.sandbox.worker`; no other harness package imports this one.
"""
