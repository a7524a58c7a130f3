"""Helpers of the validate stage: the expectation suite run on a table of any size, in bounded memory.

:func:`factorflow.stages.validate.validate_ratings` takes a ratings Parquet file
and gives the suite's verdict; these modules let it do so one bounded batch at a
time while reporting as if Great Expectations had seen the whole table:

- :mod:`~factorflow.stages.validation.column_types`: the types of the columns
  the suite reads, from the file's footer, before any row is checked;
- :mod:`~factorflow.stages.validation.partitions`: the table split by a hash of
  the columns uniqueness checks compare, so duplicates meet in one part;
- :mod:`~factorflow.stages.validation.gx_runs`: Great Expectations run on the
  file's footer (table-level checks) and on each part (row-level checks);
- :mod:`~factorflow.stages.validation.batch_results`: the parts' results added
  up into one whole-table result per expectation;
- :mod:`~factorflow.stages.validation.report`: each failure as a JSON-safe dict
  and a few lines a person can act on.
"""
