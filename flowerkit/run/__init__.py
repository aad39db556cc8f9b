"""The run contract: options (config), the plan decided once (plan, prepare), the run folder and its one
writer (layout, rundir), and the runs already written (runs)."""
