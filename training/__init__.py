import engine  # noqa: F401  (first: it sets the OpenMP spin count before torch loads; see engine/__init__.py)
