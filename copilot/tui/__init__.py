"""The Textual app. Shows and asks; no training or git logic lives here."""
