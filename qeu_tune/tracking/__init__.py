"""Writing to MLflow while sweeps run: the tracker, its journal (spool) and ``sync``. No Ray."""
