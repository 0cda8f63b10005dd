"""Drive the system's headless Chromium from tests (stdlib only, no browser downloads)."""
