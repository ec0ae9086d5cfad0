"""The ground floor: metric names, MLflow tags, paths, errors, secret redaction, child processes.

Constants live here once; nothing here imports another qeu_tune layer, Ray or MLflow.
"""
