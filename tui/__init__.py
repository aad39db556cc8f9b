"""The ``flowerkit dashboard`` terminal UI (Textual); ``tui.runs_reader`` is its plain-Python file reader."""
