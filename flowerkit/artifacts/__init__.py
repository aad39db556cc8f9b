"""Writers of what a run leaves behind (see docs/artifacts.md)."""
