"""Airflow glue: operators and the plugin. The only package that imports Airflow."""
