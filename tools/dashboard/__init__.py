"""The parts of ``tools/render_dashboard.py`` (``make dashboard``): see that file."""
