"""Predict flower classes for a user's own photos, from a run's checkpoint or an ONNX export.

Plain library code (no Prefect, Typer or Textual): ``prepare_predict`` validates everything and returns a
``PredictPlan``; ``run_predictions(plan, sink)`` streams one row per input to the sink and returns a summary.
The CLI (``flowerkit predict``) and, later, a Prefect flow are thin layers over these two functions.
"""
