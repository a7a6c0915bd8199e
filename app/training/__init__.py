"""The training subprocess: `python -m app.training --job-dir DIR`.

Only this package imports torch, transformers and peft, and nothing in the app imports it: the
window and the workers start it as a child process and read its events (app.events).
"""
