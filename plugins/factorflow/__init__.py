"""factorflow: warehouse ratings in, trained latent-factor models out.

The library in this package is importable without Airflow; everything that
touches Airflow lives in :mod:`factorflow.airflow`.
"""

__version__ = "0.1.0"
