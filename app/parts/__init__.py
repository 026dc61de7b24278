"""The editor's parts: each owns a panel (app/panels.py) and connects it to the engine objects it observes."""
