"""The window: PySide6 widgets, dialogs and item models. Calls into `app`, never the reverse."""
