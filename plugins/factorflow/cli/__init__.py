"""The ``factorflow`` command line: demo data, fitting rating files, a look at what was published.

:mod:`~factorflow.cli.main` parses the command and prints; :mod:`~factorflow.cli.fit_files`
trains on rating files and scores a test file; :mod:`~factorflow.cli.readers`
reads CSV, TSV, MovieLens ``.dat`` and Parquet rating files;
:mod:`~factorflow.cli.catalog` lists the published runs for the Airflow UI.
"""
