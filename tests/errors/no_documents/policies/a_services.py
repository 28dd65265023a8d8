"""No module-level policy objects yet."""

TODO = 1
