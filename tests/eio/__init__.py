"""Real python-socketio servers and clients, run as subprocesses from trial tests."""
