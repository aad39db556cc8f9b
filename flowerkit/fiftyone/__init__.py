"""FiftyOne: load a run's predictions as a dataset (load), compare runs (compare), its database (runtime)."""
