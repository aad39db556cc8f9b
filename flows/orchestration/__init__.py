"""What runs beside the flows on the Prefect side, and is not a task: the watcher that marks a killed run's flow
run Crashed, and reconciling crashed runs' records with the server (``flowerkit runs`` and the dashboard)."""
