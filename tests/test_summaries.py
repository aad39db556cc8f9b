"""What `flowerkit runs list` and the Prefect run summary say about the checkpoint a train run selected.

Runs are written by the dashboard tests' ``write_run`` (the documented record format, fixed values); the
summary is built from a metrics dict as the train flow passes it (docs/artifacts.md).
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tests.test_tui import write_run


def test_runs_list_shows_the_selected_step_and_monitored_value(workdir: Path) -> None:
    from flowerkit.cli import app

    output = Path("output")
    write_run(output, "sgd")
    write_run(output, "adamw", recipe={"optimizer": "adamw"},
              selection={"selected_step": 5, "selected_weights": "ema", "monitor": "val_loss",
                         "monitor_value": 1.23456})
    write_run(output, "live", status="running", step=3, evaluated=False)
    listed = CliRunner().invoke(app, ["runs", "list", "--output-dir", str(output)], terminal_width=120)
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[0]: line for line in listed.output.splitlines() if line.strip()}
    assert "selected" in lines["name"] and "monitored" in lines["name"]
    assert "10 (raw)" in lines["sgd"] and "val_accuracy 0.5000" in lines["sgd"]
    assert "5 (ema)" in lines["adamw"] and "val_loss 1.2346" in lines["adamw"]
    assert "(raw)" not in lines["live"] and "val_" not in lines["live"]  # still training: nothing selected


def test_summary_names_the_selected_checkpoint_and_why() -> None:
    from flowerkit.tasks.reporting import summary_markdown

    metrics = {"split": "val", "accuracy": 0.75, "loss": 0.9, "selected_step": 300,
               "selected_checkpoint": "run/checkpoints/best.bin", "selected_weights": "ema",
               "monitor": "val_accuracy", "monitor_value": 0.751234, "last_step": 400, "stopped_early": True,
               "stop_reason": "no improvement of val_accuracy in 2 evaluations (--early_stop_patience 2); best at "
                              "step 300", "test_accuracy": 0.7}
    training = {"start_step": 0, "steps": 400, "final_loss": 0.5, "images_per_second": 10.0}
    text = summary_markdown("train", "run", "run-1", "cpu", "fp32", "0" * 64, metrics, [], training)
    assert "- selected checkpoint: `run/checkpoints/best.bin` (step 300, ema weights)" in text
    assert "- monitor: `val_accuracy` = 0.7512" in text
    assert "- stopped early: yes: no improvement of val_accuracy in 2 evaluations" in text
    assert "| test_accuracy | 0.7 |" in text  # --test_after: beside validation, never mixed into it

    # Ran to the end: said so. The training result (absolute path) is the fallback when metrics lack it.
    ran_out = summary_markdown("train", "run", "run-1", "cpu", "fp32", "0" * 64, {"accuracy": 0.5}, [],
                               training | {"selected_step": 400, "selected_checkpoint": "/abs/best.bin",
                                           "selected_weights": "raw", "monitor": "val_loss", "monitor_value": 0.8,
                                           "stopped_early": False})
    assert "(step 400, raw weights)" in ran_out and "- stopped early: no" in ran_out
    assert "`val_loss` = 0.8" in ran_out

    evaluated = summary_markdown("eval", "ev", "ev-1", "cpu", "fp32", "0" * 64, {"accuracy": 0.5}, [],
                                 checkpoint="run/checkpoints/best.bin")
    assert "selected checkpoint" not in evaluated and "stopped early" not in evaluated  # an eval run selects nothing
