"""Airflow-facing adapters of the co2 library: connections, metrics, failure semantics.

`include/co2` knows nothing of Airflow; this package is what the DAG uses to speak Airflow.
"""
