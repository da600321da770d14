"""Benchmarks of the project's MLflow server against stock `mlflow server` (see the README (Performance))."""
